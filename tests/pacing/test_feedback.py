"""The hook observer feeds only our starts' answers into their service's limit."""

from __future__ import annotations

from typing import Any

import pytest

from rce_lib.api.models import TaskType
from rce_lib.hooks._routes import ApiRequest
from rce_lib.ledger import Ledger
from rce_lib.pacing.feedback import fan_out, pacing_observer
from rce_lib.pacing.policy import PacingPolicy
from rce_lib.pacing.store import Pacer

NSX_START = ApiRequest(
    method="POST",
    route="/api/v1/sddcs/{sddc_id}/components/{component}/upgrade",
    path="/api/v1/sddcs/sddc-0001/components/nsx/upgrade",
    task_type=TaskType.UPGRADE_NSX,
)
TASK_POLL = ApiRequest(method="GET", route="/api/v1/tasks/{task_id}", path="/api/v1/tasks/task-1")


@pytest.fixture
def pacer(ledger: Ledger) -> Pacer:
    pacer = Pacer(ledger, PacingPolicy(refusals=3))
    for i in range(4):
        pacer.acquire("nsx", f"h{i}", "run-1")
    return pacer


def test_refused_starts_close_their_service(pacer: Pacer, caplog: pytest.LogCaptureFixture) -> None:
    observe = pacing_observer(pacer)
    for status in (503, 429, 503):
        observe(NSX_START, status, 0.01)
    assert {s.service: s.limit for s in pacer.states()} == {"nsx": 2.0}
    assert "nsx keeps refusing our starts" in caplog.text


@pytest.mark.parametrize("status", [429, 503])
def test_throttled_reads_and_polls_do_not_count(pacer: Pacer, status: int) -> None:
    observe = pacing_observer(pacer)
    for _ in range(10):
        observe(TASK_POLL, status, 0.01)
    assert [s.limit for s in pacer.states()] == [None]


def test_errors_and_lost_answers_do_not_count(pacer: Pacer) -> None:
    observe = pacing_observer(pacer)
    for status in (500, 502, None, 409, 422):
        for _ in range(5):
            observe(NSX_START, status, 0.01)
    assert [s.limit for s in pacer.states()] == [None]


def test_fan_out_calls_every_observer_even_after_one_fails() -> None:
    seen: list[Any] = []

    def broken(req: ApiRequest, status: int | None, seconds: float) -> None:
        raise RuntimeError("boom")

    fan_out(broken, None, lambda r, s, t: seen.append(s))(NSX_START, 202, 0.1)
    assert seen == [202]
