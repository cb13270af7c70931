"""`python -m rce_lib.sim serve ...` works without the console script."""

from __future__ import annotations

import sys

from rce_lib.sim.cli import main

sys.exit(main())
