"""Every log line of ours carries the rollout fields, through Airflow's own task-log configuration
(structlog; stdlib `logging` routed through the same processors)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.api.tracing import trace_id_for
from rce_lib.hooks.sddc_api import SddcApiHook
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.telemetry import log_context, scope
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from tests.waiting import first_event

R, W, RUN, TARGET = "r", "w", "scheduled__2026-11-25", "1.26.0"
FIELDS = ("wave", "run_id", "sddc_id", "phase", "try_number", "downstream_task_id", "trace_id")
Lines = Callable[[], list[dict[str, Any]]]


class Ti:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number


def _ready(fleet: Any, n: int) -> list[str]:
    items = fleet.request("GET", "/api/v1/sddcs").json()["items"]
    ids = [s["id"] for s in items if s["version"] == "1.25.0" and s["status"] == "READY"][:n]
    assert len(ids) == n
    return ids


def _key(sddc_id: str) -> str:
    return idempotency_key(
        KeyParts(rollout=R, wave=W, sddc_id=sddc_id, phase="precheck", target_version=TARGET)
    )


def _ours(lines: list[dict[str, Any]], logger_part: str) -> list[dict[str, Any]]:
    return [line for line in lines if logger_part in str(line.get("logger", ""))]


def test_operator_and_hook_lines_carry_every_field(
    task_logs: Lines, no_tracing: None, fleet: Any, ledger: Ledger
) -> None:
    (sddc_id,) = _ready(fleet, 1)
    _enroll(ledger, R, W, sddc_id, RUN, TARGET, "1.25.0")
    trace_id = trace_id_for(R, W, sddc_id, RUN)

    # a structlog line: the operator's own `self.log`, once the downstream task is known
    op = PrecheckOperator(task_id="precheck", sddc_id=sddc_id, target_version=TARGET, rollout=R, wave=W)
    op.execute({"run_id": RUN, "ti": Ti(3)})  # type: ignore[arg-type]
    operation = ledger.get_operation(R, W, sddc_id, Phase.PRECHECK)
    assert operation is not None and operation.task_id

    # a stdlib `logging` line: the hook's, from an observer that fails
    def broken(*_: Any) -> None:
        raise RuntimeError("observer bug")

    with scope.sddc_scope(
        rollout=R, wave=W, sddc_id=sddc_id, phase="postcheck", context={"run_id": RUN, "ti": Ti(1)}, entry="x"
    ):
        log_context.downstream_task("task-xyz")
        SddcApiHook(trace_id=trace_id, on_request=broken).get_sddc(sddc_id)
    assert structlog.contextvars.get_contextvars() == {}  # unbound on exit

    lines = task_logs()
    started = [line for line in _ours(lines, "PrecheckOperator") if "created (key" in line["event"]]
    assert len(started) == 1, lines
    assert {k: started[0][k] for k in FIELDS} == {
        "wave": W,
        "run_id": RUN,
        "sddc_id": sddc_id,
        "phase": "precheck",
        "try_number": 3,
        "downstream_task_id": operation.task_id,
        "trace_id": trace_id,
    }
    assert started[0]["rollout"] == R

    hook_lines = _ours(lines, "rce_lib.hooks.sddc_api")
    assert hook_lines and all("on_request observer failed" in line["event"] for line in hook_lines)
    assert {k: hook_lines[0][k] for k in FIELDS} == {
        "wave": W,
        "run_id": RUN,
        "sddc_id": sddc_id,
        "phase": "postcheck",
        "try_number": 1,
        "downstream_task_id": "task-xyz",
        "trace_id": trace_id,
    }
    # every line from our code (operator, hooks, ledger...) carries the fields; Airflow's own
    # safeguard warns under the operator's logger name before `execute` runs (tests only)
    ours = [
        line
        for line in lines
        if "rce_lib" in str(line.get("logger", "")) and "outside of the Task Runner" not in line["event"]
    ]
    assert ours and all(set(FIELDS) <= set(line) for line in ours)


def test_triggers_sharing_one_event_loop_each_log_their_own_fields(
    task_logs: Lines, no_tracing: None, fleet: Any
) -> None:
    """The triggerer runs every trigger in its own asyncio task: what one binds, no other sees.
    (Tasks the API does not know: a trigger logs an outcome other than success, one line each.)"""
    triggers: dict[str, DownstreamTaskTrigger] = {}
    for sddc_id in _ready(fleet, 2):
        task_id = f"task-gone-{sddc_id}"
        fields = {"rollout": R, "wave": W, "run_id": RUN, "sddc_id": sddc_id, "phase": "precheck"}
        triggers[task_id] = DownstreamTaskTrigger(
            task_id=task_id,
            trace_id=trace_id_for(R, W, sddc_id, RUN),
            log_fields={**fields, "trace_id": trace_id_for(R, W, sddc_id, RUN), "try_number": 1},
            poll_min_s=0.05,
            poll_max_s=0.1,
        )

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(first_event(t) for t in triggers.values())))

    events = asyncio.run(both())
    assert [e.payload["status"] for e in events] == ["error", "error"]
    assert structlog.contextvars.get_contextvars() == {}

    lines = _ours(task_logs(), "rce_lib.triggers.downstream_task")
    # one per trigger, logged after both polled side by side (the deferring step logs the wait)
    assert sorted(line["downstream_task_id"] for line in lines) == sorted(triggers)
    for line in lines:
        trigger = triggers[line["downstream_task_id"]]
        assert line["sddc_id"] == trigger.log_fields["sddc_id"]
        assert line["trace_id"] == trigger.trace_id
        assert line["downstream_task_id"] in line["event"]


def test_only_the_documented_fields_can_be_bound() -> None:
    with pytest.raises(ValueError, match="not a log context field"), log_context.bound(sddc="x"):
        pass
