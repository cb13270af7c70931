"""Errors the ledger raises. They carry the project's reason codes so that a
ledger problem reads the same in the task log as any other failure."""

from __future__ import annotations

from rce_lib.errors import RceError, Reason


class LedgerError(RceError):
    """Base for ledger errors."""

    reason = Reason.CONFLICT


class LedgerCorrupt(LedgerError):
    """A stored row no longer parses (edited by hand, or written by another version).

    Raised instead of a raw validation traceback so the task log names the table and
    the row; there is no dedicated reason code yet, so it uses CONTRACT_VIOLATION
    ("something we cannot read")."""

    reason = Reason.CONTRACT_VIOLATION

    def __init__(self, table: str, key: str, detail: str) -> None:
        super().__init__(f"ledger row {table}[{key}] does not parse: {detail}")
        self.table = table
        self.key = key


class StaleGeneration(LedgerError):
    """A task was recorded against a generation that another process already bumped.

    Writing it would attach an old key's task to the new generation, so it is refused."""

    reason = Reason.CONFLICT
