"""Wait, in the triggerer, until a downstream service has room for one more task of ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rce_lib.pacing import wakeup
from rce_lib.telemetry import log_context
from rce_lib.triggers import _ledger


class ServiceSlotTrigger(BaseTrigger):
    """Fires once `service` has room under its ceiling and adaptive limit (rce_lib.pacing),
    and no later phase (`rank`) waits for it in this process (rce_lib.pacing.wakeup).

    It only observes: the operator then takes the slot atomically (`Pacer.acquire`)
    and defers again if another phase took it first. While it waits a phase costs no
    worker and sends the service nothing.
    """

    def __init__(
        self,
        *,
        ledger_url: str,
        service: str,
        poll_s: float = 5.0,
        log_fields: dict[str, Any] | None = None,
        rank: int = 0,
    ) -> None:
        super().__init__()
        self.rank = rank
        self.ledger_url = _ledger.masked(ledger_url) or ledger_url  # no password in the trigger table
        self.service = service
        self.poll_s = poll_s
        self.log_fields = dict(log_fields or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rce_lib.triggers.service_slot.ServiceSlotTrigger",
            {
                "ledger_url": self.ledger_url,
                "service": self.service,
                "poll_s": self.poll_s,
                "log_fields": self.log_fields,
                "rank": self.rank,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        fields = {k: v for k, v in self.log_fields.items() if k in log_context.FIELDS}
        with log_context.bound(**fields):
            async for event in self._wait():
                yield event

    async def _wait(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from rce_lib.ledger import Ledger
        from rce_lib.pacing.store import Pacer

        pacer = Pacer(Ledger(await _ledger.resolved(self.ledger_url)))
        has_room = sync_to_async(pacer.has_room, thread_sensitive=False)
        while wakeup.outranked(self.service, self.rank) or not await has_room(self.service):
            await wakeup.given_back_or_timeout(self.service, self.poll_s, self.rank)
        yield TriggerEvent({"status": "room", "service": self.service})
