"""The canary gate sensor against the simulator (a real process) and a real ledger.

Each test records where the canary slice ended in the ledger, points the gate at the
simulator and calls `execute` as the worker would; deferrals surface as TaskDeferred.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.gate import record
from rce_lib.gate.stats import Verdict
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.plan.model import Gate, PromQLSignal
from rce_lib.sensors.canary_gate import CanaryGateSensor

pytestmark = pytest.mark.integration

CANARY = ["sddc-0001", "sddc-0003"]
BULK = ["sddc-0004", "sddc-0005", "sddc-0006"]
TARGET = "1.26.0"


class _Ti:
    def __init__(self, canary: list[str], bulk: list[str]) -> None:
        self.xcoms = {"canary": canary, "bulk": bulk}

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        assert task_ids == "resolve_cohort"
        return self.xcoms[str(key)]


def context(canary: list[str] = CANARY, bulk: list[str] = BULK) -> Any:
    return {"run_id": "run-1", "ti": _Ti(canary, bulk)}


@pytest.fixture(scope="module")
def _module_sim(module_sim_factory: Any) -> Any:
    return module_sim_factory(size=8, time_scale=60000)


@pytest.fixture
def sim(_module_sim: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """One simulator for the module (the gate only reads it), faults and counters reset per test."""
    _module_sim.reset_faults()
    _module_sim.reset_counters()
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(_module_sim.url, _module_sim.token))
    return _module_sim


def slice_ended(ledger: Ledger, *, ago_s: float, failed: tuple[str, ...] = ()) -> None:
    end = datetime.now(UTC) - timedelta(seconds=ago_s)
    for sddc_id in CANARY:
        if sddc_id in failed:
            ledger.upsert_progress(
                "r", "w", sddc_id, "run-1", phase=Phase.ROLLBACK, status=Status.ROLLED_BACK, finished_at=end
            )
        else:
            ledger.upsert_progress(
                "r", "w", sddc_id, "run-1", phase=Phase.DONE, status=Status.SUCCEEDED, finished_at=end
            )


def gate_sensor(bake_seconds: int = 0, **gate: Any) -> CanaryGateSensor:
    settings: dict[str, Any] = {"max_error_rate": 0.05, "max_p95_latency_ms": 800, "min_samples": 1, **gate}
    return CanaryGateSensor(
        task_id="canary_gate",
        rollout="r",
        wave="w",
        target_version=TARGET,
        gate=Gate.model_validate(settings),
        max_fail_percentage=0,
        bake_seconds=bake_seconds,
    )


def last_decision(ledger: Ledger) -> Any:
    decisions = record.decisions(ledger, "r", "w", "run-1")
    assert decisions, "no gate_decision recorded"
    return decisions[-1]


def test_healthy_canary_passes_and_the_decision_is_one_block_in_the_ledger(sim: Any, ledger: Ledger) -> None:
    slice_ended(ledger, ago_s=60)
    text = gate_sensor(min_effect=1.0).execute(context())
    assert text.splitlines()[1] == "CANARY GATE PASS - wave w, run run-1"
    decision = last_decision(ledger)
    assert decision.decision is Verdict.PASS
    event = ledger.events(rollout="r", wave="w", kinds=[record.DECISION_EVENT])[-1]
    assert event.message == text  # the ledger holds the same block the log shows
    assert sim.counters()["mutating_calls"] == 0  # judging changes nothing


def test_unhealthy_canary_fails_the_gate_naming_the_sddc(sim: Any, ledger: Ledger) -> None:
    slice_ended(ledger, ago_s=60)
    sim.faults(unhealthy_sddc_ids=["sddc-0003"])
    with pytest.raises(
        AirflowFailException, match=r"CANARY_GATE_FAILED.*health: sddc-0003: status UNHEALTHY"
    ):
        gate_sensor().execute(context())
    checks = {c.name: c for c in last_decision(ledger).checks}
    assert checks["health"].verdict is Verdict.FAIL and "sddc-0001" not in checks["health"].detail


def test_health_body_breaking_the_contract_is_a_failed_check(sim: Any, ledger: Ledger) -> None:
    slice_ended(ledger, ago_s=60)
    sim.faults(malformed_health_sddc_ids=["sddc-0001"])
    with pytest.raises(AirflowFailException, match=r"sddc-0001: health unreadable: \[CONTRACT_VIOLATION\]"):
        gate_sensor().execute(context())
    assert last_decision(ledger).decision is Verdict.FAIL


def test_failed_canary_members_fail_the_gate_on_the_budget(sim: Any, ledger: Ledger) -> None:
    slice_ended(ledger, ago_s=60, failed=("sddc-0001",))
    with pytest.raises(AirflowFailException, match=r"failure_rate: 1 of 2 canary SDDC\(s\) failed \(50%"):
        gate_sensor().execute(context())


def test_bakes_deferred_then_samples_and_decides(sim: Any, ledger: Ledger) -> None:
    slice_ended(ledger, ago_s=0)
    sensor = gate_sensor(bake_seconds=3600, sample_interval_seconds=30)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context())
    assert deferred.value.method_name == "execute"
    wait = deferred.value.trigger.moment - datetime.now(UTC)  # type: ignore[attr-defined]
    assert timedelta(seconds=20) < wait <= timedelta(seconds=30)
    samples = ledger.events(rollout="r", wave="w", kinds=[record.SAMPLE_EVENT])
    assert len(samples) == 1
    assert len(samples[0].data["canary"]) == 2
    # the baseline: the rest of the cohort first, then not-yet-upgraded SDDCs of the fleet
    assert samples[0].data["baseline_ids"][:3] == BULK and len(samples[0].data["baseline_ids"]) == 6
    assert record.decisions(ledger, "r", "w", "run-1") == []  # no decision while baking


def test_inconclusive_holds_then_fails_closed_when_the_hold_is_over(sim: Any, ledger: Ledger) -> None:
    slice_ended(ledger, ago_s=60)
    holding = gate_sensor(min_samples=50, max_hold_seconds=3600)
    with pytest.raises(TaskDeferred):
        holding.execute(context())
    assert last_decision(ledger).holding
    expired = gate_sensor(min_samples=50, max_hold_seconds=10)  # the bake ended 60 s ago
    with pytest.raises(AirflowFailException, match=r"GATE_INCONCLUSIVE.*too little data"):
        expired.execute(context())
    assert not last_decision(ledger).holding


def test_no_canary_slice_passes_without_reading_anything(sim: Any, ledger: Ledger) -> None:
    text = gate_sensor().execute(context(canary=[], bulk=BULK))
    assert "the wave has no canary slice" in text
    assert sim.counters()["requests"] == [] or all(
        not r["route"].startswith("/api/") for r in sim.counters()["requests"]
    )


def test_kill_switch_stops_the_gate_without_a_decision(
    sim: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    slice_ended(ledger, ago_s=60)
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH", "freeze")
    with pytest.raises(AirflowFailException, match="KILL_SWITCH"):
        gate_sensor().execute(context())
    assert record.decisions(ledger, "r", "w", "run-1") == []  # so the canary is not rolled back


# ------------------------------------------------------------------ PromQL, against a stand-in Prometheus


class _Prometheus(BaseHTTPRequestHandler):
    answer: dict[str, Any] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Prometheus]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.server_address[1], "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_PROM", json.dumps(conn))
    yield _Prometheus
    server.shutdown()


def vector(*values: float) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "value": [0, str(v)]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_promql_signal_fails_the_gate_over_its_limit(sim: Any, ledger: Ledger, prometheus: Any) -> None:
    slice_ended(ledger, ago_s=60)
    signal = {"conn_id": "prom", "query": "sum(rate(errors[5m]))", "max_value": 0.1}
    prometheus.answer = vector(0.02, 0.04)
    gate_sensor(prometheus=signal, min_effect=1.0).execute(context())
    prometheus.answer = vector(0.02, 0.4)
    with pytest.raises(AirflowFailException, match=r"prometheus: max 0.4 over 2 sample"):
        gate_sensor(prometheus=signal, min_effect=1.0).execute(context())
    assert PromQLSignal.model_validate(signal).query == "sum(rate(errors[5m]))"


def test_unreachable_prometheus_is_inconclusive(
    sim: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    slice_ended(ledger, ago_s=60)
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_PROM", json.dumps(conn))
    signal = {"conn_id": "prom", "query": "up", "max_value": 1}
    with pytest.raises(AirflowFailException, match=r"GATE_INCONCLUSIVE.*prometheus: query failed"):
        gate_sensor(prometheus=signal, inconclusive="fail", min_effect=1.0).execute(context())
