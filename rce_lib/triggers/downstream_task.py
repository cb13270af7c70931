"""Wait, in the triggerer, for a downstream SDDC API task to reach a terminal status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rce_lib.errors import ApiError, RceError
from rce_lib.triggers.backoff import next_poll_delay


class DownstreamTaskTrigger(BaseTrigger):
    """Polls GET /api/v1/tasks/{id} with a growing interval until the task is terminal.

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
        poll_min_s: float = 1.0,
        poll_max_s: float = 30.0,
        started_at: float | None = None,
        first_poll_s: float = 0.0,
        echo: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.downstream_task_id = task_id
        self.sddc_api_conn_id = sddc_api_conn_id
        self.trace_id = trace_id
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
                "poll_min_s": self.poll_min_s,
                "poll_max_s": self.poll_max_s,
                "started_at": self.started_at,
                "first_poll_s": self.first_poll_s,
                "echo": self.echo,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rce_lib.hooks.sddc_api import SddcApiAsyncHook

        hook = SddcApiAsyncHook(sddc_api_conn_id=self.sddc_api_conn_id, trace_id=self.trace_id)
        # Not before first_poll_s: a task resumed within seconds of deferring can race the
        # exit of its own previous workload (the executor then reports a state mismatch).
        await asyncio.sleep(max(0.0, self.started_at + self.first_poll_s - time.time()))
        while True:
            try:
                task = await hook.get_task(self.downstream_task_id)
            except ApiError as err:
                if err.retryable:
                    await asyncio.sleep(max(err.retry_after or 0.0, self.poll_min_s))
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
            elapsed = time.time() - self.started_at
            await asyncio.sleep(next_poll_delay(elapsed, minimum=self.poll_min_s, maximum=self.poll_max_s))


def _error_event(err: RceError) -> dict[str, Any]:
    return {"status": "error", "reason": err.reason.value, "message": str(err), "retryable": err.retryable}
