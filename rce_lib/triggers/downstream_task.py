"""Wait, in the triggerer, for a downstream SDDC API task to reach a terminal status."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rce_lib.api.models import TaskStatus
from rce_lib.errors import ApiError, RceError
from rce_lib.telemetry import log_context, tracing
from rce_lib.triggers import _ledger
from rce_lib.triggers.backoff import poll_delay

log = logging.getLogger(__name__)


class DownstreamTaskTrigger(BaseTrigger):
    """Polls GET /api/v1/tasks/{id} with a growing interval until the task is terminal.

    The interval is `rce_lib.triggers.backoff.poll_delay` of the task's age (seconds since
    `started_at`: the operator passes the task's start, so the back-off goes on from its
    inline wait), so the polls grow with the log of the task's duration; a Retry-After
    on a refused poll is honoured.

    Yields one event: {"status": "terminal", "task": <Task as JSON>} or
    {"status": "error", "reason": ..., "message": ...}, each carrying `echo` (what
    the operator needs to resume: which operation, host and key generation) back
    unchanged. It has no side effects, so the triggerer may run it more than once.
    """

    def __init__(
        self,
        *,
        task_id: str,
        sddc_api_conn_id: str = "sddc_api",
        trace_id: str | None = None,
        metrics_ledger_url: str | None = None,
        parent_span_id: str | None = None,
        log_fields: dict[str, Any] | None = None,
        poll_min_s: float = 1.0,
        poll_max_s: float | None = None,
        started_at: float | None = None,
        first_poll_s: float = 0.0,
        echo: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.downstream_task_id = task_id
        self.sddc_api_conn_id = sddc_api_conn_id
        self.trace_id = trace_id
        self.metrics_ledger_url = _ledger.masked(metrics_ledger_url)  # no password in the trigger table
        self.parent_span_id = parent_span_id
        self.log_fields = dict(log_fields or {})
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.started_at = started_at if started_at is not None else time.time()
        self.first_poll_s = first_poll_s
        self.echo = dict(echo or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rce_lib.triggers.downstream_task.DownstreamTaskTrigger",
            {
                "task_id": self.downstream_task_id,
                "sddc_api_conn_id": self.sddc_api_conn_id,
                "trace_id": self.trace_id,
                "metrics_ledger_url": self.metrics_ledger_url,
                "parent_span_id": self.parent_span_id,
                "log_fields": self.log_fields,
                "poll_min_s": self.poll_min_s,
                "poll_max_s": self.poll_max_s,
                "started_at": self.started_at,
                "first_poll_s": self.first_poll_s,
                "echo": self.echo,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Each trigger runs in its own asyncio task, so these fields are this trigger's alone.
        fields = {k: v for k, v in self.log_fields.items() if k in log_context.FIELDS}
        with log_context.bound(**{**fields, "downstream_task_id": self.downstream_task_id}):
            async for event in self._wait():
                yield event

    async def _wait(self) -> AsyncIterator[TriggerEvent]:
        from rce_lib.hooks.sddc_api import SddcApiAsyncHook

        observer = await _ledger.metrics_observer(self.metrics_ledger_url)
        hook = SddcApiAsyncHook(
            sddc_api_conn_id=self.sddc_api_conn_id,
            trace_id=self.trace_id,
            parent_span_id=self.parent_span_id,
            on_request=observer,
        )
        span = tracing.wait_span(
            "rce.wait downstream_task",
            trace_id=hook.trace_id,
            parent_span_id=self.parent_span_id,
            attributes={
                "rce.downstream_task_id": self.downstream_task_id,
                "rce.wave": self.log_fields.get("wave"),
                "rce.sddc_id": self.log_fields.get("sddc_id"),
                "rce.phase": self.log_fields.get("phase"),
                "rce.op": self.echo.get("op"),
            },
        )
        hook.parent_span_id = span.span_id or self.parent_span_id  # polls are the wait's children
        # the deferring step logged the wait; in the triggerer each line costs its supervisor a loop
        log.debug("waiting for downstream task %s (%s)", self.downstream_task_id, self.echo.get("op"))
        try:
            async for event in self._poll(hook):
                status = str(event.payload.get("status"))
                span.finish(status, event.payload.get("reason"), error=status != "terminal")
                span.end()
                task = event.payload.get("task") or {}
                outcome = task.get("status") or event.payload.get("message")
                # a success shows as the phase's next step (or its end) and in the ledger; every
                # other outcome is said here. This runs on the triggerer's event loop, where each
                # line is a blocking write to its supervisor, which then runs a loop of bookkeeping.
                log.log(
                    logging.DEBUG if outcome == TaskStatus.SUCCEEDED else logging.INFO,
                    "downstream task %s: %s",
                    self.downstream_task_id,
                    outcome,
                )
                yield event
        finally:
            span.end()  # cancelled, or the triggerer stopped: ended once, without an outcome

    async def _poll(self, hook: Any) -> AsyncIterator[TriggerEvent]:
        # Not before first_poll_s: a task resumed within seconds of deferring can race the
        # exit of its own previous workload (the executor then reports a state mismatch).
        await asyncio.sleep(max(0.0, self.started_at + self.first_poll_s - time.time()))
        while True:
            try:
                task = await hook.get_task(self.downstream_task_id)
            except ApiError as err:
                if err.retryable:
                    await asyncio.sleep(self._delay(None, retry_after=err.retry_after))
                    continue
                yield TriggerEvent({**_error_event(err), "echo": self.echo})
                return
            except RceError as err:
                yield TriggerEvent({**_error_event(err), "echo": self.echo})
                return
            if task.terminal:
                yield TriggerEvent(
                    {"status": "terminal", "task": task.model_dump(mode="json"), "echo": self.echo}
                )
                return
            await asyncio.sleep(self._delay(task.progress_percent))

    def _delay(self, progress: int | None, *, retry_after: float | None = None) -> float:
        return poll_delay(
            time.time() - self.started_at,
            minimum=self.poll_min_s,
            progress=progress,
            maximum=self.poll_max_s,
            retry_after=retry_after,
        )


def _error_event(err: RceError) -> dict[str, Any]:
    return {"status": "error", "reason": err.reason.value, "message": str(err), "retryable": err.retryable}
