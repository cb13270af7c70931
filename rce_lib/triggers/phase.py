"""Carry a phase on in the triggerer after a wait, instead of resuming it on a worker.

A phase that waits (for its downstream task, a slot on its service, a pause, its
maintenance window) defers; without this trigger Airflow then resumes it on a worker: a new
task process, its execution-API calls and the scheduler's bookkeeping, about 0.8 CPU-s of
Airflow per resumption and half of all task executions of a wave (docs/performance.md).

`PhaseTrigger` wraps the wait. When the wait's event comes, the phase is rebuilt here from its
rendered arguments and the method the worker would have run is called with the event, in a
thread (the phase's code is synchronous: HTTP and the ledger); a further wait it asks for
(TaskDeferred) is awaited here as well. So the phase's own code decides every step, as on a
worker. Then:

* the phase is done: the task ends here (TaskSuccessEvent, its return value the XCom);
* the phase failed (its failure is in the ledger already): the task goes back to a worker
  with the failure, which raises it there, so Airflow's retries apply as before;
* anything else went wrong here (a bug, the ledger unreachable): the task goes back to a
  worker with the last wait's event, and the worker does exactly what it would have done
  without this trigger. Phases are resume-safe, so taking over at any point is safe.

On by default; `RCE_PHASES_IN_TRIGGERER=off` makes the worker resume after every wait.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, TaskDeferred
from airflow.sdk.module_loading import import_string  # type: ignore[attr-defined]  # re-exported, no __all__
from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

log = logging.getLogger(__name__)

ENV_VAR = "RCE_PHASES_IN_TRIGGERER"
THREADS_ENV_VAR = "RCE_PHASE_THREADS"
#: the worker-side method a PhaseTrigger's event resumes
RESUME_METHOD = "resume_from_triggerer"
#: the phase methods a wait may resume (anything else is left to the worker)
CONTINUABLE = frozenset(
    {"execute_complete", "resume_after_wait", "resume_after_window", "resume_for_admission"}
)
#: waits carried on in one trigger before handing over to a worker anyway (a runaway loop)
MAX_HOPS = 500

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: it makes its own pool when it needs one."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether phases carry on in the triggerer (`RCE_PHASES_IN_TRIGGERER`, default on)."""
    raw = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip().lower()
    return raw not in ("off", "false", "0", "no", "disabled")


def _threads() -> ThreadPoolExecutor:
    """The triggerer's threads for phase steps: a step is short (a few HTTP calls and ledger
    writes; a phase run here never waits inline), so a few threads serve many phases."""
    global _pool
    with _pool_lock:
        if _pool is None:
            size = int(os.environ.get(THREADS_ENV_VAR, "") or 8)
            _pool = ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix="rce-phase")
        return _pool


@dataclass(frozen=True)
class _Deferred:
    trigger: BaseTrigger
    method: str


@dataclass(frozen=True)
class _Ended:
    event: TriggerEvent


class TiView:
    """The task instance as the phase's code reads it (its try number, for retries)."""

    def __init__(self, **fields: Any) -> None:
        self.run_id = fields.get("run_id")
        self.try_number = int(fields.get("try_number") or 1)
        self.map_index = int(fields.get("map_index", -1))
        self.dag_id = fields.get("dag_id")
        self.task_id = fields.get("task_id")


class PhaseTrigger(BaseTrigger):
    """Waits as `wait` would, then runs the phase's `method` with the event, here.

    `phase`: {"classpath": the operator class, "kwargs": its rendered arguments}.
    `context`: run_id, try_number, map_index, dag_id, task_id of the deferring execution.
    `wait`: [classpath, kwargs] of the trigger the phase deferred on (None: call `method` at
    once, without an event); `method`: the method its event resumes.
    """

    #: the operator's methods this trigger may call
    continuable: frozenset[str] = CONTINUABLE

    def __init__(
        self,
        *,
        phase: dict[str, Any],
        context: dict[str, Any],
        wait: list[Any] | tuple[str, dict[str, Any]] | None,
        method: str,
    ) -> None:
        super().__init__()
        self.phase = dict(phase)
        self.context = dict(context)
        self.wait: tuple[str, dict[str, Any]] | None = None if wait is None else (str(wait[0]), dict(wait[1]))
        self.method = method

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.PhaseTrigger",
            {
                "phase": self.phase,
                "context": self.context,
                "wait": None if self.wait is None else list(self.wait),
                "method": self.method,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        trigger: BaseTrigger | None = None
        if self.wait is not None:
            trigger = import_string(self.wait[0])(**self.wait[1])
        method = self.method
        operator: Any = None
        for _ in range(MAX_HOPS):
            payload: Any = None
            if trigger is not None:
                event = await _first_event(trigger)
                if event is None:  # the wait ended without an event: the worker decides
                    yield handoff(method, None)
                    return
                payload = event.payload
            try:
                if operator is None:
                    operator = await _in_thread(self._operator)
                outcome = await _in_thread(self._step, operator, method, payload)
            except Exception as err:  # the phase's own failures are outcomes, not exceptions
                log.warning(
                    "carrying %s on here failed (%s: %s); the worker takes over",
                    method,
                    type(err).__name__,
                    err,
                )
                yield handoff(method, payload)
                return
            if isinstance(outcome, _Ended):
                yield outcome.event
                return
            trigger, method = outcome.trigger, outcome.method
        log.warning("phase still waiting after %d waits here; the worker takes over", MAX_HOPS)
        yield handoff(method, None)

    # -- in a thread ---------------------------------------------------------------
    def _operator(self) -> Any:
        cls = import_string(str(self.phase["classpath"]))
        operator = cls(**dict(self.phase.get("kwargs") or {}))
        operator.in_triggerer()
        return operator

    def _step(self, operator: Any, method: str, payload: Any) -> _Deferred | _Ended:
        """One call of the phase's `method`: the next wait, or how the task ends."""
        if method not in self.continuable:
            raise ValueError(f"{method} is not a phase method to resume here")
        ti = TiView(**self.context)
        context = {"run_id": ti.run_id, "ti": ti, "task_instance": ti}
        try:
            call = getattr(operator, method)
            value = call(context) if payload is None else call(context, event=payload)
        except TaskDeferred as deferred:
            if deferred.method_name not in self.continuable or deferred.kwargs or deferred.timeout:
                raise RuntimeError(f"a wait resuming {deferred.method_name} is left to the worker") from None
            return _Deferred(deferred.trigger, deferred.method_name)
        except AirflowSkipException as err:
            return _Ended(raised("skip", err))
        except AirflowFailException as err:
            return _Ended(raised("fail", err))
        except AirflowException as err:
            if getattr(err, "reason", None) is None:  # not one of the phase's own failures
                raise
            return _Ended(raised("retry", err))
        return _Ended(TaskSuccessEvent(xcoms={"return_value": _jsonable(value)}))


def handoff(method: str, payload: Any) -> TriggerEvent:
    """Back to a worker, which runs `method` with the wait's event as it would have."""
    return TriggerEvent({"status": "handoff", "method": method, "event": _jsonable(payload)})


def raised(kind: str, err: BaseException) -> TriggerEvent:
    """Back to a worker with a failure the phase already recorded, to be raised there."""
    return TriggerEvent(
        {
            "status": "raised",
            "kind": kind,
            "reason": getattr(err, "reason", None),
            "message": str(getattr(err, "detail", None) or err),
        }
    )


async def _first_event(trigger: BaseTrigger) -> TriggerEvent | None:
    events: Any = trigger.run()
    try:
        return await anext(events, None)
    finally:
        await events.aclose()
        await trigger.cleanup()


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_threads(), lambda: context.run(fn, *args))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value
