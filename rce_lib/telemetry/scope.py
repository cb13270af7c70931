"""The scope every execution of one of our tasks runs in: log fields bound, a span open,
spans flushed at the end (a worker process is short-lived).

`sddc_scope` is for the tasks of one SDDC (the phases, rollback): the (run, SDDC)
trace, the span a child of the SDDC span. `wave_scope` is for the wave's own tasks
(cohort, gate, summary): the wave's trace, the span a child of the wave span.
`sweep_scope` is for the reconciliation sweep's tasks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rce_lib.api.tracing import trace_id_for
from rce_lib.telemetry import log_context, tracing
from rce_lib.telemetry.tracing import TaskSpan

_CODED = re.compile(r"^\[([A-Z][A-Z0-9_]*)\]")

#: Log scope of the reconciliation sweep, which belongs to no wave (as its ledger events).
SWEEP_ROLLOUT = "rce"
SWEEP_WAVE = "reconcile"


def run_id_of(context: Mapping[str, Any]) -> str:
    return str(context.get("run_id", ""))


def try_number_of(context: Mapping[str, Any]) -> int | None:
    try_number = getattr(context.get("ti"), "try_number", None)
    return int(try_number) if isinstance(try_number, int) else None


def outcome_of(exc: BaseException) -> tuple[str, str | None, bool]:
    """(outcome, reason, is an error) of an execution that raised: deferring and skipping are not
    errors; a failure carries its reason code when it has one (PhaseError and friends)."""
    from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

    if isinstance(exc, TaskDeferred):
        return "deferred", None, False
    if isinstance(exc, AirflowSkipException):
        return "skipped", None, False
    reason = getattr(exc, "reason", None)
    if not reason:  # our failures read "[REASON_CODE] message" wherever they come from
        coded = _CODED.match(str(exc))
        reason = coded.group(1) if coded else type(exc).__name__
    return "failed", str(reason), True


@contextmanager
def _scope(
    span_name: str,
    *,
    ref: tracing.SpanRef,
    parent_span_id: str | None,
    fields: dict[str, Any],
    attributes: dict[str, Any],
) -> Iterator[TaskSpan]:
    with log_context.bound(**fields):
        try:
            with tracing.task_span(
                span_name, trace_id=ref.trace_id, parent_span_id=parent_span_id, attributes=attributes
            ) as span:
                try:
                    yield span
                except BaseException as exc:
                    outcome, reason, error = outcome_of(exc)
                    span.finish(outcome, reason, error=error)
                    raise
        finally:
            tracing.force_flush()


@contextmanager
def sddc_scope(
    *, rollout: str, wave: str, sddc_id: str, phase: str, context: Mapping[str, Any], entry: str
) -> Iterator[TaskSpan]:
    """One execution of a task of one SDDC (`entry`: execute, execute_complete, resume...)."""
    run_id, try_number = run_id_of(context), try_number_of(context)
    ref = tracing.sddc_ref(str(rollout), str(wave), str(sddc_id), run_id)
    fields = {
        "rollout": rollout,
        "wave": wave,
        "run_id": run_id,
        "sddc_id": sddc_id,
        "phase": phase,
        "try_number": try_number,
        "downstream_task_id": None,
        "trace_id": ref.trace_id,
    }
    attributes = {
        "rce.rollout": rollout,
        "rce.wave": wave,
        "rce.sddc_id": sddc_id,
        "rce.phase": phase,
        "rce.try_number": try_number,
        "rce.run_id": run_id,
        "rce.entry": entry,
    }
    with _scope(
        f"rce.phase {phase}", ref=ref, parent_span_id=ref.span_id, fields=fields, attributes=attributes
    ) as span:
        yield span


@contextmanager
def wave_scope(*, rollout: str, wave: str, task: str, context: Mapping[str, Any]) -> Iterator[TaskSpan]:
    """One execution of a wave-level task (cohort, gate, summary): `phase` is the task's role."""
    run_id, try_number = run_id_of(context), try_number_of(context)
    ref = tracing.wave_ref(rollout, wave, run_id)
    fields = {
        "rollout": rollout,
        "wave": wave,
        "run_id": run_id,
        "phase": task,
        "try_number": try_number,
        "trace_id": ref.trace_id,
    }
    attributes = {
        "rce.rollout": rollout,
        "rce.wave": wave,
        "rce.task": task,
        "rce.try_number": try_number,
        "rce.run_id": run_id,
    }
    with _scope(
        f"rce.task {task}", ref=ref, parent_span_id=ref.span_id, fields=fields, attributes=attributes
    ) as span:
        yield span


@contextmanager
def sweep_scope(*, task: str, context: Mapping[str, Any]) -> Iterator[TaskSpan]:
    """One execution of a task of the reconciliation sweep: the sweep run is one trace (the
    API calls already carry its id), each task execution one root span in it."""
    run_id, try_number = run_id_of(context), try_number_of(context)
    trace_id = trace_id_for("reconcile", run_id)
    fields = {
        "rollout": SWEEP_ROLLOUT,
        "wave": SWEEP_WAVE,
        "run_id": run_id,
        "phase": task,
        "try_number": try_number,
        "trace_id": trace_id,
    }
    attributes = {"rce.task": task, "rce.try_number": try_number, "rce.run_id": run_id}
    with _scope(
        f"rce.task {task}",
        ref=tracing.SpanRef(trace_id, ""),
        parent_span_id=None,
        fields=fields,
        attributes=attributes,
    ) as span:
        yield span
