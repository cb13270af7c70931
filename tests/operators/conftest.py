"""Fixtures for the phase decision and trigger tests (helpers in _fakes.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helper module next to this file, importable whatever pytest's import mode is.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _fakes import FakeRun


@pytest.fixture
def run() -> FakeRun:
    return FakeRun()
