"""Polling for a condition in tests that drive real processes (Airflow, Prometheus), and
driving a trigger the way the triggerer does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def wait_until(what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
    """check()'s first truthy value; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def first_event(trigger: BaseTrigger, timeout: float = 20.0) -> TriggerEvent:
    """What the triggerer does: take the trigger's first event, then close its generator."""
    events = trigger.run()
    try:
        return await asyncio.wait_for(events.asend(None), timeout)
    finally:
        await events.aclose()
