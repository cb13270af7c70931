"""Fixtures for the static checks of the Docker deployment (helpers in _compose.py).

compose_text -> str: docker-compose.yaml as written.
compose -> dict: docker-compose.yaml as Compose reads it (YAML anchors and `<<` merges
    resolved; ${VAR} interpolation left as text: see _compose.interpolate).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# The helper module next to this file, importable whatever pytest's import mode is.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _compose import COMPOSE_FILE


@pytest.fixture(scope="session")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="session")
def compose(compose_text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(compose_text)
    assert isinstance(loaded, dict)
    return loaded
