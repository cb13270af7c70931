"""Each gate signal as a check, and the decision folded from them."""

from __future__ import annotations

from datetime import UTC, datetime

from rce_lib.gate import evidence
from rce_lib.gate.evidence import Check, Member, Reading
from rce_lib.gate.stats import Verdict
from rce_lib.plan.model import Gate, PromQLSignal

GATE = Gate(max_error_rate=0.05, max_p95_latency_ms=800, min_samples=3)
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def member(sddc_id: str, ok: bool = True, code: str | None = None) -> Member:
    if ok:
        return Member(sddc_id=sddc_id, status="succeeded", phase="done")
    return Member(sddc_id=sddc_id, status="rolled_back", phase="rollback", error_code=code)


def reading(sddc_id: str, error_rate: float = 0.005, p95: float = 150.0, status: str = "HEALTHY") -> Reading:
    return Reading(sddc_id=sddc_id, error_rate=error_rate, p95_latency_ms=p95, status=status)


def test_failure_rate_is_judged_against_the_budget() -> None:
    members = [member("a"), member("b"), member("c", ok=False, code="UPGRADE_FAILED"), member("d")]
    assert evidence.failure_rate(members, 25).verdict is Verdict.PASS  # 25% is not more than 25%
    failed = evidence.failure_rate(members, 20)
    assert failed.verdict is Verdict.FAIL
    assert "c [UPGRADE_FAILED]" in failed.detail and failed.data["percent"] == 25.0


def test_health_over_a_threshold_fails_with_the_sddc_named() -> None:
    latest = {"a": reading("a"), "b": reading("b", error_rate=0.2, p95=1900, status="UNHEALTHY")}
    check = evidence.health(latest, ["a", "b"], GATE)
    assert check.verdict is Verdict.FAIL
    assert "b: error rate 0.2000 > 0.05" in check.detail and "b: p95 latency 1900 ms > 800 ms" in check.detail
    assert "b: status UNHEALTHY" in check.detail
    assert "a:" not in check.detail


def test_unreadable_or_missing_health_is_never_healthy() -> None:
    latest = {"a": Reading(sddc_id="a", problem="health unreadable: [CONTRACT_VIOLATION] error_rate missing")}
    check = evidence.health(latest, ["a", "b"], GATE)
    assert check.verdict is Verdict.FAIL
    assert "a: health unreadable" in check.detail and "b: no health reading" in check.detail


def test_phase_latency_spike_against_history_and_absolute_bounds() -> None:
    history = {"upgrade_vcenter": [40.0, 45.0, 50.0, 55.0], "upgrade_nsx": [30.0]}  # nsx: too little history
    canary = {"a": {"upgrade_vcenter": 60.0, "upgrade_nsx": 500.0}, "b": {"upgrade_vcenter": 400.0}}
    gate = GATE.model_copy(update={"phase_latency_factor": 4.0})
    check = evidence.phase_latency(canary, history, gate)
    assert check.verdict is Verdict.FAIL
    assert "b upgrade_vcenter took 400 s > bound 190 s" in check.detail  # 4 x median 47.5
    assert "upgrade_nsx" not in check.detail  # no bound: not judged
    bounded = GATE.model_copy(update={"max_phase_seconds": {"upgrade_nsx": 100.0}})
    assert "a upgrade_nsx took 500 s > bound 100 s" in evidence.phase_latency(canary, {}, bounded).detail
    assert evidence.phase_latency({"a": {"upgrade_nsx": 5.0}}, {}, GATE).verdict is Verdict.PASS


def test_baseline_comparison_leaves_out_unreadable_readings() -> None:
    canary = [reading("a", error_rate=0.035 + i / 1000) for i in range(4)]
    canary.append(Reading(sddc_id="a", problem="unreadable"))
    base = [reading(f"b{i}", error_rate=0.001 + i / 1000) for i in range(8)]
    checks = {c.name: c for c in evidence.baseline(canary, base, GATE)}
    assert checks["baseline_error_rate"].verdict is Verdict.FAIL
    assert checks["baseline_error_rate"].data["n_canary"] == 4
    assert checks["baseline_p95_latency_ms"].verdict is Verdict.PASS


def test_prometheus_signal() -> None:
    signal = PromQLSignal(conn_id="prom", query="rate(x[5m])", max_value=0.1)
    assert evidence.prometheus(signal, [0.01, 0.05], None).verdict is Verdict.PASS
    assert evidence.prometheus(signal, [0.01, 0.5], None).verdict is Verdict.FAIL
    assert evidence.prometheus(signal, [], None).verdict is Verdict.INCONCLUSIVE
    failed = evidence.prometheus(signal, None, "ConnectionError: refused")
    assert failed.verdict is Verdict.INCONCLUSIVE and "refused" in failed.detail


def test_decision_fail_beats_inconclusive_beats_pass_and_renders_one_block() -> None:
    ok = Check(name="health", verdict=Verdict.PASS, detail="fine")
    unsure = Check(name="baseline_error_rate", verdict=Verdict.INCONCLUSIVE, detail="too little data")
    bad = Check(name="failure_rate", verdict=Verdict.FAIL, detail="2 of 2 failed")
    assert evidence.decide("w", "r", [ok], now=NOW, hold=True, bake_ends_at=None).decision is Verdict.PASS
    holding = evidence.decide("w", "r", [ok, unsure], now=NOW, hold=True, bake_ends_at=None)
    assert holding.decision is Verdict.INCONCLUSIVE and holding.holding
    closed = evidence.decide("w", "r", [ok, unsure], now=NOW, hold=False, bake_ends_at=None)
    assert not closed.holding and closed.reasons == ["baseline_error_rate: too little data"]
    failed = evidence.decide("w", "r", [ok, unsure, bad], now=NOW, hold=True, bake_ends_at=None)
    assert failed.decision is Verdict.FAIL and not failed.holding
    assert failed.reasons == ["failure_rate: 2 of 2 failed"]
    text = failed.render()
    assert text.splitlines()[1] == "CANARY GATE FAIL - wave w, run r"
    assert "[    fail    ] failure_rate: 2 of 2 failed" in text and "health: fine" in text
