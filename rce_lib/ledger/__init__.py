"""The engine's own durable record (no Airflow): per (rollout, wave, SDDC) progress,
downstream operations and their key generations, SDDC claims, and an event log.

Give it a SQLAlchemy URL: by default sqlite:///$AIRFLOW_HOME/rce_ledger.db (the
Airflow side resolves the `rce_state` connection), or any PostgreSQL URL.
"""

from rce_lib.ledger.engine import dispose_engine, get_engine
from rce_lib.ledger.errors import LedgerCorrupt, LedgerError, StaleGeneration
from rce_lib.ledger.models import (
    ClaimHolder,
    ClaimResult,
    Event,
    EventKind,
    LastError,
    Operation,
    Phase,
    Progress,
    Status,
)
from rce_lib.ledger.store import Ledger, ProgressChanges

__all__ = [
    "ClaimHolder",
    "ClaimResult",
    "Event",
    "EventKind",
    "LastError",
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "Operation",
    "Phase",
    "Progress",
    "ProgressChanges",
    "StaleGeneration",
    "Status",
    "dispose_engine",
    "get_engine",
]
