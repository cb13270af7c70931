"""DownstreamTaskTrigger: serialisable as plain kwargs, and driven against the real simulator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from tests.waiting import first_event

ECHO = {"op": "host_upgrade", "host_id": "sddc-0001-c1-h2", "generation": 3}
LOG_FIELDS = {"rollout": "r", "wave": "w", "sddc_id": "sddc-0001", "phase": "upgrade_hosts", "try_number": 2}


def _drive(trigger: DownstreamTaskTrigger, timeout: float = 20.0) -> TriggerEvent:
    return asyncio.run(first_event(trigger, timeout))


def test_serialize_round_trips_exactly() -> None:
    trigger = DownstreamTaskTrigger(
        task_id="task-42",
        sddc_api_conn_id="other_api",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        metrics_ledger_url="sqlite:////tmp/ledger.db",
        parent_span_id="b7ad6b7169203331",
        log_fields=LOG_FIELDS,
        poll_min_s=0.5,
        poll_max_s=12.0,
        started_at=1_700_000_000.25,
        first_poll_s=15.0,
        echo=ECHO,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "rce_lib.triggers.downstream_task.DownstreamTaskTrigger"
    assert kwargs == {
        "task_id": "task-42",
        "sddc_api_conn_id": "other_api",
        "metrics_ledger_url": "sqlite:////tmp/ledger.db",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "parent_span_id": "b7ad6b7169203331",
        "log_fields": LOG_FIELDS,
        "poll_min_s": 0.5,
        "poll_max_s": 12.0,
        "started_at": 1_700_000_000.25,
        "first_poll_s": 15.0,
        "echo": ECHO,
    }
    again = DownstreamTaskTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)


def test_started_at_is_fixed_at_first_defer_and_survives_a_restart() -> None:
    """A triggerer restart rebuilds the trigger from kwargs: the poll interval keeps its growth."""
    first = DownstreamTaskTrigger(task_id="task-1")
    _, kwargs = first.serialize()
    assert isinstance(kwargs["started_at"], float)
    assert DownstreamTaskTrigger(**kwargs).started_at == first.started_at


@pytest.fixture
def sim(sim_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    server = sim_factory(size=2, time_scale=6000)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    return server


def _task_polls(sim: Any) -> int:
    return sum(r["count"] for r in sim.counters()["requests"] if r["route"] == "/api/v1/tasks/{task_id}")


def _info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "rce_lib.triggers.downstream_task" and r.levelno >= logging.INFO
    ]


def test_run_yields_the_terminal_task_with_echo_unchanged(sim: Any, caplog: pytest.LogCaptureFixture) -> None:
    resp = sim.request(
        "POST", "/api/v1/sddcs/sddc-0001/prechecks", json={"target_version": "1.26.0"}, key="trigger-test-1"
    )
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["id"]
    trigger = DownstreamTaskTrigger(
        task_id=task_id, poll_min_s=0.05, poll_max_s=0.2, first_poll_s=0.0, echo=ECHO
    )

    with caplog.at_level(logging.DEBUG, logger="rce_lib.triggers.downstream_task"):
        event = _drive(trigger)

    assert event.payload["status"] == "terminal"
    assert event.payload["echo"] == ECHO
    assert event.payload["task"]["id"] == task_id
    assert event.payload["task"]["status"] == "SUCCEEDED"
    assert event.payload["task"]["type"] == "PRECHECK"
    assert _task_polls(sim) >= 1
    assert sim.counters()["mutating_calls"] == 1  # the trigger only reads
    # a success is not logged here (the phase's next step says it): no line through the
    # triggerer's supervisor for it
    assert _info_lines(caplog) == []


def test_run_reports_an_unknown_task_as_an_error_event_with_echo(
    sim: Any, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = DownstreamTaskTrigger(task_id="no-such-task", poll_min_s=0.05, first_poll_s=0.0, echo=ECHO)

    with caplog.at_level(logging.INFO, logger="rce_lib.triggers.downstream_task"):
        event = _drive(trigger)

    assert event.payload["status"] == "error"
    assert event.payload["retryable"] is False
    assert event.payload["echo"] == ECHO
    assert "no-such-task" in event.payload["message"] or "404" in event.payload["message"]
    # anything but a success is said in the log
    assert [line for line in _info_lines(caplog) if line.startswith("downstream task no-such-task: ")]


def test_first_poll_waits_first_poll_s_after_started_at(sim: Any) -> None:
    """The first GET is not sent before started_at + first_poll_s (counted from the first defer,
    so a restarted triggerer does not wait the whole delay again)."""
    import time

    resp = sim.request(
        "POST", "/api/v1/sddcs/sddc-0002/prechecks", json={"target_version": "1.26.0"}, key="trigger-test-2"
    )
    assert resp.status_code == 202, resp.text
    before = _task_polls(sim)
    started = time.time()
    trigger = DownstreamTaskTrigger(
        task_id=resp.json()["id"], poll_min_s=0.05, started_at=started - 0.5, first_poll_s=1.0, echo=ECHO
    )
    event = _drive(trigger)
    assert event.payload["status"] == "terminal"
    assert time.time() - started >= 0.45
    assert _task_polls(sim) - before == 1  # the task had ended by then: one GET
