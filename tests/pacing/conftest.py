"""The pacing store runs on every ledger backend (SQLite, and PostgreSQL when a driver is
installed), with the ledger tests' fixtures."""

from __future__ import annotations

from tests.ledger.conftest import ledger, ledger_url

__all__ = ["ledger", "ledger_url"]
