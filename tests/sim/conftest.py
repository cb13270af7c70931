"""Fixtures of the simulator tests: the contract validator (the simulator fixtures
themselves live in tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _sim_contract import Contract


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract()
