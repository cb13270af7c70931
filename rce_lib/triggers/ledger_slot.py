"""Wait, in the triggerer, until a wave run has room for one more SDDC in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rce_lib.telemetry import log_context
from rce_lib.triggers import _ledger


class LedgerSlotTrigger(BaseTrigger):
    """Fires once fewer than `limit` SDDCs of the run are in flight in the ledger.

    It only observes: the operator then takes the slot atomically (`Ledger.admit`)
    and defers again if another SDDC took it first. Reading the ledger here, not in
    a worker, means a waiting SDDC costs no worker process until a slot opens.
    """

    def __init__(
        self,
        *,
        ledger_url: str,
        rollout: str,
        wave: str,
        run_id: str,
        limit: int,
        poll_s: float = 5.0,
        first_poll_s: float = 0.0,
        started_at: float | None = None,
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ledger_url = _ledger.masked(ledger_url) or ledger_url  # no password in the trigger table
        self.rollout = rollout
        self.wave = wave
        self.run_id = run_id
        self.limit = limit
        self.poll_s = poll_s
        self.first_poll_s = first_poll_s
        self.started_at = started_at if started_at is not None else time.time()
        self.log_fields = dict(log_fields or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rce_lib.triggers.ledger_slot.LedgerSlotTrigger",
            {
                "ledger_url": self.ledger_url,
                "rollout": self.rollout,
                "wave": self.wave,
                "run_id": self.run_id,
                "limit": self.limit,
                "poll_s": self.poll_s,
                "first_poll_s": self.first_poll_s,
                "started_at": self.started_at,
                "log_fields": self.log_fields,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Each trigger runs in its own asyncio task, so these fields are this trigger's alone.
        fields = {k: v for k, v in self.log_fields.items() if k in log_context.FIELDS}
        with log_context.bound(
            **{**fields, "rollout": self.rollout, "wave": self.wave, "run_id": self.run_id}
        ):
            async for event in self._wait():
                yield event

    async def _wait(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from rce_lib.ledger import Ledger

        ledger = Ledger(await _ledger.resolved(self.ledger_url))
        count = sync_to_async(ledger.in_flight, thread_sensitive=False)
        await asyncio.sleep(max(0.0, self.started_at + self.first_poll_s - time.time()))
        while True:
            in_flight = await count(self.rollout, self.wave, self.run_id)
            if in_flight < self.limit:
                yield TriggerEvent({"status": "slot_free", "in_flight": in_flight, "limit": self.limit})
                return
            await asyncio.sleep(self.poll_s)
