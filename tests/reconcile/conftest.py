"""Reconciliation test fixtures (builders in _world.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# The helper module next to this file, importable whatever pytest's import mode is.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
