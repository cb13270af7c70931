"""A short-lived cache of the API's releases, shared by every phase through the ledger.

Each phase needs the target release (which builds to reach) and the source release (for
the in-flight reconciliation); read from the API that was two GETs per phase, 12 per
SDDC. A release read by any phase within `ttl_s` is reused instead. The contract does
not promise that a release never changes, so the cache is short: a release changed under
a running wave is seen within `ttl_s`, and a phase that acts on an outdated build is
refused by the API (409) and reads again. A cached body that no longer parses is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from rce_lib.ledger import schema
from rce_lib.ledger.store import Ledger

DEFAULT_TTL_S = 300.0


class ReleaseCache:
    """`get` a fresh cached release body, `put` one just read."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.ttl = timedelta(seconds=DEFAULT_TTL_S if ttl_s is None else ttl_s)
        self._clock = clock

    def get(self, version: str) -> dict[str, Any] | None:
        table = schema.release_cache
        with self.ledger.transaction(write=False) as conn:
            row = conn.execute(select(table).where(table.c.version == version)).mappings().first()
        if row is None or self._clock() - row["fetched_at"] > self.ttl:
            return None
        try:
            body = json.loads(row["body"])
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def put(self, version: str, body: dict[str, Any]) -> None:
        table = schema.release_cache
        values = {"body": json.dumps(body, sort_keys=True), "fetched_at": self._clock()}
        with self.ledger.transaction(write=True) as conn:
            if conn.execute(update(table).where(table.c.version == version).values(**values)).rowcount == 0:
                conn.execute(table.insert().values(version=version, **values))
