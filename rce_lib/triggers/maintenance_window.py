"""Wait, in the triggerer, until an SDDC's maintenance window opens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rce_lib.errors import RceError
from rce_lib.telemetry import log_context
from rce_lib.triggers import _ledger

log = logging.getLogger(__name__)

#: Longest single sleep: a clock that jumps (NTP, a suspended VM) is noticed within this.
MAX_SLEEP_S = 3600.0


class MaintenanceWindowTrigger(BaseTrigger):
    """Fires at `opens_at` (ISO 8601, UTC), the opening the operator decided to wait for.

    Every `recheck_s` (0: never) it reads the SDDC again and fires early when its
    maintenance window is no longer `window` (the customer moved it: the new one may
    open sooner); a failed read is logged and the wait goes on (the operator decides
    again on resume either way). Yields one event {"status": "window_open" |
    "window_changed", "opens_at": ..., "window": <what the API shows, when read>}.
    It only reads, so the triggerer may run it more than once.
    """

    def __init__(
        self,
        *,
        opens_at: str,
        sddc_id: str,
        window: dict[str, int] | None,
        sddc_api_conn_id: str = "sddc_api",
        recheck_s: float = 900.0,
        trace_id: str | None = None,
        metrics_ledger_url: str | None = None,
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.opens_at = opens_at
        self.sddc_id = sddc_id
        self.window = dict(window) if window is not None else None
        self.sddc_api_conn_id = sddc_api_conn_id
        self.recheck_s = recheck_s
        self.trace_id = trace_id
        self.metrics_ledger_url = _ledger.masked(metrics_ledger_url)  # no password in the trigger table
        self.log_fields = dict(log_fields or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rce_lib.triggers.maintenance_window.MaintenanceWindowTrigger",
            {
                "opens_at": self.opens_at,
                "sddc_id": self.sddc_id,
                "window": self.window,
                "sddc_api_conn_id": self.sddc_api_conn_id,
                "recheck_s": self.recheck_s,
                "trace_id": self.trace_id,
                "metrics_ledger_url": self.metrics_ledger_url,
                "log_fields": self.log_fields,
            },
        )

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.opens_at).astimezone(UTC)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Each trigger runs in its own asyncio task, so these fields are this trigger's alone.
        fields = {k: v for k, v in self.log_fields.items() if k in log_context.FIELDS}
        with log_context.bound(**fields):
            async for event in self._wait():
                yield event

    async def _wait(self) -> AsyncIterator[TriggerEvent]:
        moment = self.moment
        log.info("waiting for the maintenance window of %s to open at %s", self.sddc_id, self.opens_at)
        next_read = _now() + self.recheck_s if self.recheck_s > 0 else None
        while True:
            now = _now()
            remaining = moment.timestamp() - now
            if remaining <= 0:
                log.info("maintenance window of %s is open (%s)", self.sddc_id, self.opens_at)
                yield TriggerEvent(
                    {"status": "window_open", "opens_at": self.opens_at, "window": self.window}
                )
                return
            if next_read is not None and now >= next_read:
                changed = await self._read_window()
                next_read = now + self.recheck_s
                if changed is not None:
                    log.info("window of %s changed to %s: deciding again", self.sddc_id, changed[0])
                    yield TriggerEvent(
                        {"status": "window_changed", "opens_at": self.opens_at, "window": changed[0]}
                    )
                    return
            until = min(remaining, MAX_SLEEP_S, (next_read - now) if next_read is not None else MAX_SLEEP_S)
            await asyncio.sleep(max(until, 0.0))

    async def _read_window(self) -> tuple[dict[str, int] | None] | None:
        """The SDDC's window when it differs from the one decided on (a 1-tuple: it may be None)."""
        from rce_lib.hooks.sddc_api import SddcApiAsyncHook

        observer = await _ledger.metrics_observer(self.metrics_ledger_url)
        hook = SddcApiAsyncHook(
            sddc_api_conn_id=self.sddc_api_conn_id, trace_id=self.trace_id, on_request=observer
        )
        try:
            sddc = await hook.get_sddc(self.sddc_id)
        except RceError as err:
            log.warning("could not re-read the window of %s (%s); still waiting", self.sddc_id, err)
            return None
        current = sddc.maintenance_window.model_dump() if sddc.maintenance_window is not None else None
        return None if current == self.window else (current,)


def _now() -> float:
    return datetime.now(UTC).timestamp()
