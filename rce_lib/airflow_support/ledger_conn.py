"""Find the ledger: the `rce_state` Airflow connection if there is one, else a SQLite
file under $AIRFLOW_HOME. Airflow 3 tasks cannot use Airflow's own metadata DB."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from rce_lib.ledger import Ledger

LEDGER_CONN_ID = "rce_state"


def default_ledger_url() -> str:
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return f"sqlite:///{home / 'rce_ledger.db'}"


def ledger_url() -> str:
    """The SQLAlchemy URL of the ledger. `RCE_LEDGER_URL` wins (tests, tools), then the
    `rce_state` connection (its `extra.url`, or its URI), then the SQLite default."""
    explicit = os.environ.get("RCE_LEDGER_URL")
    if explicit:
        return explicit
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(LEDGER_CONN_ID)
    except Exception:  # no such connection: the embedded default
        return default_ledger_url()
    url = (conn.extra_dejson or {}).get("url")
    if url:
        return str(url)
    uri = conn.get_uri()
    return uri.replace("postgres://", "postgresql://", 1)


@lru_cache(maxsize=4)
def _ledger_for(url: str) -> Ledger:
    ledger = Ledger(url)
    ledger.ensure_schema()
    return ledger


def get_ledger() -> Ledger:
    return _ledger_for(ledger_url())
