"""Ledger fixtures: every test that takes `ledger_url` runs on a fresh SQLite file and,
when a PostgreSQL driver is installed, on a throwaway database on 127.0.0.1:5432."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from rce_lib.ledger import Ledger, dispose_engine

PG_SERVER = os.environ.get("RCE_TEST_PG_SERVER", "postgres@127.0.0.1:5432")


def pg_dialect() -> str | None:
    """The SQLAlchemy dialect+driver for whichever PostgreSQL driver is importable."""
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return dialect
    return None


BACKENDS = ["sqlite"] + (["postgresql"] if pg_dialect() else [])


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL of an empty ledger store nobody else uses."""
    if request.param == "sqlite":
        # A nested, not-yet-existing directory: the engine must create it.
        url = f"sqlite:///{tmp_path_factory.mktemp('ledger')}/nested/dir/rce_ledger.db"
        yield url
        dispose_engine(url)
        return
    dialect = pg_dialect()
    name = f"rce_ledger_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{dialect}://{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{dialect}://{PG_SERVER}/{name}"
    try:
        yield url
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def ledger(ledger_url: str) -> Ledger:
    return Ledger(ledger_url)
