"""State on disk: one SQLite file (WAL) in the state dir, one JSON row per record.

Why SQLite: only the rows that changed are written, so a 1000-SDDC fleet with tens of
thousands of tasks costs a few small row writes per mutation, not a file rewrite.
Fleet, task and idempotency changes are committed before the response that caused
them is sent; with WAL and synchronous=NORMAL a commit survives kill -9 of this
process (only an OS crash could lose it). Counters change on every request and are
written at most every `persist_interval_s` (default 0.2 s) and on shutdown, so a
kill -9 loses at most that window of counter updates.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

TABLES = ("sddcs", "tasks", "snapshots", "idem", "meta")


class Disk:
    """A thin key -> JSON row store, one table per record kind."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "sim-state.sqlite3"
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        for table in TABLES:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY, v TEXT NOT NULL)")

    def has_state(self) -> bool:
        row = self.conn.execute("SELECT v FROM meta WHERE k = 'initialized'").fetchone()
        return row is not None

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        for (value,) in self.conn.execute(f"SELECT v FROM {table}"):
            yield json.loads(value)

    def meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def write(self, changes: Mapping[str, Iterable[tuple[str, Any]]]) -> None:
        """Upsert rows of several tables in one transaction."""
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            for table, items in changes.items():
                cur.executemany(
                    f"INSERT OR REPLACE INTO {table} (k, v) VALUES (?, ?)",
                    [(k, json.dumps(v, separators=(",", ":"))) for k, v in items],
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def delete(self, table: str, keys: Iterable[str]) -> None:
        self.conn.executemany(f"DELETE FROM {table} WHERE k = ?", [(k,) for k in keys])

    def close(self) -> None:
        self.conn.close()
