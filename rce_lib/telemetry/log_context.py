"""The fields every log line of ours carries, bound with structlog's contextvars.

Airflow 3's task logs are structlog: the task runner (and the triggerer) configure it
with `airflow.sdk.log.configure_logging`, whose processor chain starts with
`structlog.contextvars.merge_contextvars`, both for structlog loggers (`self.log` of an
operator) and for stdlib `logging` loggers (our hooks and the ledger), which reach the
same chain through `ProcessorFormatter`'s `foreign_pre_chain`. So binding the fields
here puts them on every line, as fields (JSON keys in the task log), with no logger of
our own.

Scope: the task runner runs `execute` (and `execute_complete`) in a copy of the
context, and the triggerer runs each trigger in its own asyncio task (a context of
its own too), so what one task or trigger binds is never seen by another. `bound`
still unbinds on exit, for code that runs tasks in the caller's context (tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

#: The fields, in the order they are documented (README, "Logs and traces").
FIELDS = ("rollout", "wave", "run_id", "sddc_id", "phase", "try_number", "downstream_task_id", "trace_id")


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind these fields for the duration; on exit every field is as before (also those that
    `rebind` set inside: the downstream task id, the SDDC of a sweep)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"not a log context field: {sorted(unknown)}")
    before = {k: v for k, v in structlog.contextvars.get_contextvars().items() if k in FIELDS}
    structlog.contextvars.bind_contextvars(**fields)
    try:
        yield
    finally:
        structlog.contextvars.unbind_contextvars(*FIELDS)
        structlog.contextvars.bind_contextvars(**before)


def rebind(**fields: Any) -> None:
    """Change fields inside a `bound` block (the downstream task id once it is known)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"not a log context field: {sorted(unknown)}")
    structlog.contextvars.bind_contextvars(**fields)


def downstream_task(task_id: str | None) -> None:
    """The downstream (SDDC API) task this execution now works on."""
    rebind(downstream_task_id=task_id)


def current() -> dict[str, Any]:
    """The bound fields (to hand to a trigger, whose lines are written in another process)."""
    return {k: v for k, v in structlog.contextvars.get_contextvars().items() if k in FIELDS}
