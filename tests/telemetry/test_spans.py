"""Spans against the real simulator: phase spans under the SDDC span, HTTP spans under the phase
span, and the ids the simulator saw in `traceparent` are those of the spans."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from airflow.triggers.base import TaskSuccessEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.summary import WaveSummaryOperator
from rce_lib.telemetry import tracing
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from rce_lib.triggers.phase import PhaseTrigger
from tests.waiting import first_event

R, W, RUN, TARGET = "r", "w", "manual__2026-11-25", "1.26.0"


class Ti:
    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number


def _context(try_number: int = 1) -> Any:
    return {"run_id": RUN, "ti": Ti(try_number)}


def _ready_sddc(fleet: Any) -> str:
    for sddc in fleet.request("GET", "/api/v1/sddcs").json()["items"]:
        if sddc["version"] == "1.25.0" and sddc["status"] == "READY":
            return str(sddc["id"])
    raise AssertionError("the simulated fleet has no READY SDDC at 1.25.0")


def _precheck(sddc_id: str, **kwargs: Any) -> PrecheckOperator:
    return PrecheckOperator(
        task_id="precheck", sddc_id=sddc_id, target_version=TARGET, rollout=R, wave=W, **kwargs
    )


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _sim_task(fleet: Any, task_id: str) -> dict[str, Any]:
    record = fleet.request("GET", f"/sim/tasks/{task_id}")
    assert record.status_code == 200, record.text
    return record.json()  # type: ignore[no-any-return]


@pytest.fixture
def sddc_id(fleet: Any, ledger: Ledger) -> str:
    sddc_id = _ready_sddc(fleet)
    _enroll(ledger, R, W, sddc_id, RUN, TARGET, "1.25.0")
    return sddc_id


def test_phase_span_is_a_child_of_the_sddc_span_and_parents_every_http_attempt(
    spans: InMemorySpanExporter, fleet: Any, ledger: Ledger, sddc_id: str
) -> None:
    _precheck(sddc_id).execute(_context(try_number=2))

    finished = list(spans.get_finished_spans())
    ref = tracing.sddc_ref(R, W, sddc_id, RUN)
    phase = _one(finished, "rce.phase precheck")
    assert _hex(phase.context.trace_id, 32) == ref.trace_id
    assert phase.parent is not None and phase.parent.is_remote
    assert _hex(phase.parent.span_id, 16) == ref.span_id
    assert dict(phase.attributes or {}) == {
        "rce.rollout": R,
        "rce.wave": W,
        "rce.sddc_id": sddc_id,
        "rce.phase": "precheck",
        "rce.try_number": 2,
        "rce.run_id": RUN,
        "rce.entry": "execute",
        "rce.outcome": "succeeded",
    }
    assert phase.status.status_code is StatusCode.UNSET

    http = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(http) >= 3  # the release, the SDDC, the precheck start, its polls...
    for span in http:
        assert span.parent is not None and span.parent.span_id == phase.context.span_id
        assert span.context.trace_id == phase.context.trace_id
        attributes = span.attributes or {}
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["url.template"] == span.name.split(" ", 1)[1]
        assert attributes["http.request.method"] == span.name.split(" ", 1)[0]
    post = _one(http, "POST /api/v1/sddcs/{sddc_id}/prechecks")
    assert (post.attributes or {})["http.response.status_code"] == 202

    # the simulator stored the trace and the client span it was called from
    operation = ledger.get_operation(R, W, sddc_id, Phase.PRECHECK)
    assert operation is not None and operation.task_id
    record = _sim_task(fleet, operation.task_id)
    assert record["trace_id"] == ref.trace_id == _hex(phase.context.trace_id, 32)
    assert record["parent_span_id"] == _hex(post.context.span_id, 16)


@pytest.mark.usefixtures("worker_resumes")
def test_a_deferred_phase_hands_its_span_to_the_trigger_whose_polls_nest_under_its_wait(
    spans: InMemorySpanExporter, fleet: Any, ledger: Ledger, sddc_id: str
) -> None:
    op = _precheck(sddc_id, inline_wait_s=0.0, resume_delay_s=0.0, poll_min_s=0.05, poll_max_s=0.2)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context())
    first = _one(list(spans.get_finished_spans()), "rce.phase precheck")
    assert (first.attributes or {})["rce.outcome"] == "deferred"
    assert first.status.status_code is StatusCode.UNSET

    trigger = deferred.value.trigger
    assert isinstance(trigger, DownstreamTaskTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["parent_span_id"] == _hex(first.context.span_id, 16)
    assert kwargs["log_fields"]["downstream_task_id"] == trigger.downstream_task_id
    spans.clear()

    event = asyncio.run(first_event(DownstreamTaskTrigger(**kwargs)))
    _assert_wait_nests_under(list(spans.get_finished_spans()), first, only_polls=True)
    spans.clear()

    op.execute_complete(_context(), event.payload)
    _assert_resumed_under_the_sddc(_one(list(spans.get_finished_spans()), "rce.phase precheck"), sddc_id)


def test_a_phase_going_on_in_the_triggerer_keeps_its_trace(
    spans: InMemorySpanExporter, fleet: Any, ledger: Ledger, sddc_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same trace when the phase goes on in the triggerer (rce_lib.triggers.phase): the
    wait under the deferring execution's span, the continuation a phase span of the SDDC."""
    monkeypatch.delenv("RCE_PHASES_IN_TRIGGERER", raising=False)
    op = _precheck(sddc_id, inline_wait_s=0.0, resume_delay_s=0.0, poll_min_s=0.05, poll_max_s=0.2)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context())
    first = _one(list(spans.get_finished_spans()), "rce.phase precheck")
    trigger = deferred.value.trigger
    assert isinstance(trigger, PhaseTrigger)
    assert trigger.wait[1]["parent_span_id"] == _hex(first.context.span_id, 16)
    spans.clear()

    event = asyncio.run(first_event(trigger))

    assert isinstance(event, TaskSuccessEvent)
    finished = list(spans.get_finished_spans())
    _assert_wait_nests_under(finished, first, only_polls=False)
    _assert_resumed_under_the_sddc(_one(finished, "rce.phase precheck"), sddc_id)


def _assert_wait_nests_under(waited: list[ReadableSpan], first: ReadableSpan, *, only_polls: bool) -> None:
    """The wait is a child of `first`, its polls children of the wait, all in one trace.
    `only_polls`: the wait's polls are every request made (no step after it here)."""
    wait = _one(waited, "rce.wait downstream_task")
    assert wait.parent is not None and wait.parent.span_id == first.context.span_id
    assert (wait.attributes or {})["rce.outcome"] == "terminal"
    requests = [s for s in waited if s.kind is SpanKind.CLIENT]
    polls = [p for p in requests if p.parent is not None and p.parent.span_id == wait.context.span_id]
    assert polls and all(p.context.trace_id == first.context.trace_id for p in requests)
    if only_polls:
        assert polls == requests


def _assert_resumed_under_the_sddc(resumed: ReadableSpan, sddc_id: str) -> None:
    assert (resumed.attributes or {})["rce.entry"] == "execute_complete"
    assert (
        resumed.parent is not None
        and _hex(resumed.parent.span_id, 16) == tracing.sddc_ref(R, W, sddc_id, RUN).span_id
    )


def test_a_failed_phase_span_has_status_error_and_the_reason(
    spans: InMemorySpanExporter, fleet: Any, ledger: Ledger, sddc_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH", "INC-1: bad build")
    with pytest.raises(AirflowFailException, match="KILL_SWITCH"):
        _precheck(sddc_id).execute(_context())
    phase = _one(list(spans.get_finished_spans()), "rce.phase precheck")
    assert phase.status.status_code is StatusCode.ERROR
    assert (phase.attributes or {})["rce.outcome"] == "failed"
    assert (phase.attributes or {})["rce.reason"] == "KILL_SWITCH"


def test_the_sddc_span_has_the_derived_ids_starts_when_the_sddc_did_and_links_to_the_wave(
    spans: InMemorySpanExporter, fleet: Any, ledger: Ledger, sddc_id: str
) -> None:
    op = _precheck(sddc_id)
    op.execute(_context())
    spans.clear()
    PhaseRun.from_context(op, _context()).emit_sddc_span("succeeded")

    sddc = _one(list(spans.get_finished_spans()), "rce.sddc")
    ref, wave = tracing.sddc_ref(R, W, sddc_id, RUN), tracing.wave_ref(R, W, RUN)
    assert (_hex(sddc.context.trace_id, 32), _hex(sddc.context.span_id, 16)) == (ref.trace_id, ref.span_id)
    assert sddc.parent is None
    progress = ledger.get(R, W, sddc_id)
    assert progress is not None and progress.started_at is not None
    assert sddc.start_time == int(progress.started_at.timestamp() * 1_000_000_000)
    assert [(_hex(link.context.trace_id, 32), _hex(link.context.span_id, 16)) for link in sddc.links] == [
        (wave.trace_id, wave.span_id)
    ]
    assert (sddc.attributes or {})["rce.outcome"] == "succeeded"


class _SummaryTi:
    def __init__(self, cohort: list[str]) -> None:
        self.try_number = 1
        self.xcoms: dict[str | None, Any] = {None: cohort, "canary": [], "bulk": cohort}

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        return self.xcoms[key]


def test_the_wave_summary_emits_the_wave_span_under_which_its_own_span_sits(
    spans: InMemorySpanExporter, ledger: Ledger
) -> None:
    started = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    ledger.upsert_progress(
        R,
        W,
        "sddc-0001",
        RUN,
        phase=Phase.DONE,
        status=Status.SUCCEEDED,
        started_at=started,
        finished_at=started,
    )
    summary = WaveSummaryOperator(task_id="wave_summary", rollout=R, wave=W, max_fail_percentage=0)
    summary.execute({"run_id": RUN, "ti": _SummaryTi(["sddc-0001"])})  # type: ignore[arg-type]

    finished = list(spans.get_finished_spans())
    wave, ref = _one(finished, "rce.wave"), tracing.wave_ref(R, W, RUN)
    assert (_hex(wave.context.trace_id, 32), _hex(wave.context.span_id, 16)) == (ref.trace_id, ref.span_id)
    assert wave.start_time == int(started.timestamp() * 1_000_000_000)
    assert (wave.attributes or {})["rce.outcome"] == "promoted"
    task = _one(finished, "rce.task wave_summary")
    assert task.parent is not None and task.parent.span_id == wave.context.span_id
