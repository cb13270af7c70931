"""Fixtures for the hook tests: a scripted local HTTP server and the connection pointing at it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The helper modules next to this file, importable whatever pytest's import mode is.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _fake_api import TOKEN, FakeApi
from _fake_clock import FakeClock


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi().start()
    yield server
    server.stop()


@pytest.fixture
def connect(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the `sddc_api` connection at the fake server (call again to change extras or password)."""

    def _connect(password: str | None = TOKEN, **extra: Any) -> None:
        conn: dict[str, Any] = {"conn_type": "http", "host": "127.0.0.1", "port": api.port, "schema": "http"}
        if password is not None:
            conn["password"] = password
        conn["extra"] = {"connect_timeout": 2, "read_timeout": 5, **extra}
        monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", json.dumps(conn))

    _connect()
    return _connect


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
