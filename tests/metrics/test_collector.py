"""The ledger collector: every metric derived from the shared ledger, the same from any process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rce_lib.ledger import EventKind, Ledger, Phase
from rce_lib.metrics import catalog
from rce_lib.metrics.collector import LedgerCollector
from rce_lib.metrics.downstream import increments_for
from rce_lib.pacing.store import Pacer

R, W, RUN = "r1", "canary", "run-1"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> Clock:
        self.now = T0 + timedelta(seconds=seconds)
        return self


def scrape(collector: LedgerCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Ledger:
    led = Ledger(f"sqlite:///{tmp_path}/ledger.db", clock=clock)
    led.ensure_schema()
    return led


def history(ledger: Ledger, clock: Clock) -> None:
    """A small wave: a clean precheck, an NSX phase retried after a failure, hosts still running."""
    ledger.phase_started(R, W, "sddc-1", RUN, Phase.PRECHECK)
    clock.at(30)
    ledger.phase_succeeded(R, W, "sddc-1", RUN, Phase.PRECHECK)
    clock.at(0)
    ledger.phase_started(R, W, "sddc-2", RUN, Phase.UPGRADE_NSX)
    clock.at(10)
    ledger.phase_failed(
        R, W, "sddc-2", RUN, Phase.UPGRADE_NSX, code="DOWNSTREAM_TASK_FAILED", message="x", retryable=True
    )
    clock.at(20)
    ledger.phase_started(R, W, "sddc-2", RUN, Phase.UPGRADE_NSX)
    clock.at(80)
    ledger.phase_succeeded(R, W, "sddc-2", RUN, Phase.UPGRADE_NSX)
    clock.at(0)
    ledger.phase_started(R, W, "sddc-3", RUN, Phase.UPGRADE_HOSTS)
    ledger.phase_failed(
        R, W, "sddc-4", RUN, Phase.PRECHECK, code="EVIL<script>" * 20, message="?", retryable=False
    )
    clock.at(100)


def test_phase_counters_histograms_and_retries_come_from_the_event_log(ledger: Ledger, clock: Clock) -> None:
    history(ledger, clock)
    s = scrape(LedgerCollector(ledger, now=clock))
    assert value(s, "rce_phase_total", wave=W, phase="precheck", outcome="succeeded", reason="none") == 1
    assert (
        value(
            s,
            "rce_phase_total",
            wave=W,
            phase="upgrade_nsx",
            outcome="failed",
            reason="DOWNSTREAM_TASK_FAILED",
        )
        == 1
    )
    assert value(s, "rce_phase_total", wave=W, phase="upgrade_nsx", outcome="succeeded", reason="none") == 1
    assert value(s, "rce_phase_total", wave=W, phase="precheck", outcome="failed", reason="other") == 1
    assert (
        value(s, "rce_phase_retries_total", wave=W, phase="upgrade_nsx", reason="DOWNSTREAM_TASK_FAILED") == 1
    )
    assert value(s, "rce_phase_duration_seconds_count", wave=W, phase="upgrade_nsx", outcome="succeeded") == 1
    assert value(s, "rce_phase_duration_seconds_sum", wave=W, phase="upgrade_nsx", outcome="succeeded") == 60
    assert value(s, "rce_phase_duration_seconds_sum", wave=W, phase="upgrade_nsx", outcome="failed") == 10
    assert (
        value(
            s, "rce_phase_duration_seconds_bucket", wave=W, phase="precheck", outcome="succeeded", le="15.0"
        )
        == 0
    )
    assert (
        value(
            s, "rce_phase_duration_seconds_bucket", wave=W, phase="precheck", outcome="succeeded", le="30.0"
        )
        == 1
    )
    assert value(s, "rce_sddcs", wave=W, state="running") == 1
    assert value(s, "rce_sddcs", wave=W, state="failed") == 1
    assert value(s, "rce_sddcs_in_phase", wave=W, phase="upgrade_hosts", status="running") == 1
    assert value(s, "rce_phase_oldest_running_seconds", wave=W, phase="upgrade_hosts") == 100
    assert (
        value(s, "rce_phase_max_seconds", phase="upgrade_hosts")
        == catalog.DEFAULT_PHASE_MAX_SECONDS["upgrade_hosts"]
    )
    assert value(s, "rce_ledger_up") == 1


def test_gate_wave_brake_and_drift_events(ledger: Ledger) -> None:
    ledger.append_event(R, W, "gate_decision", run_id=RUN, data={"decision": "inconclusive", "holding": True})
    ledger.append_event(R, W, "gate_decision", run_id=RUN, data={"decision": "fail", "holding": False})
    ledger.append_event(R, W, "gate_decision", run_id=RUN, data={"decision": "<img>", "holding": False})
    ledger.append_event(R, W, EventKind.WAVE_SUMMARY, run_id=RUN, data={"reason": "CANARY_GATE_FAILED"})
    ledger.append_event(R, "bulk", EventKind.WAVE_SUMMARY, run_id=RUN, data={"reason": None})
    ledger.append_event(R, W, "gate_held_by_kill_switch", run_id=RUN)
    ledger.append_event(
        R, W, "brake_applied", sddc_id="sddc-9", run_id=RUN, data={"reason": "ERROR_BUDGET_EXHAUSTED"}
    )
    flagged = {"drift": "host_disconnected", "repair": "needs_human", "outcome": "flagged"}
    ledger.append_event(R, W, EventKind.DRIFT_DETECTED, sddc_id="s1", data={**flagged, "fingerprint": "fp1"})
    ledger.append_event(R, W, EventKind.DRIFT_DETECTED, sddc_id="s2", data={**flagged, "fingerprint": "fp2"})
    ledger.append_event(
        R,
        W,
        EventKind.DRIFT_RESOLVED,
        sddc_id="s1",
        data={"drift": "host_disconnected", "fingerprint": "fp1"},
    )
    ledger.append_event(
        R,
        W,
        EventKind.DRIFT_DETECTED,
        sddc_id="s3",
        data={
            "drift": "no_such_kind",
            "repair": "exit_maintenance",
            "outcome": "repaired",
            "fingerprint": "fp3",
        },
    )
    s = scrape(LedgerCollector(ledger))
    assert value(s, "rce_gate_decisions_total", wave=W, decision="hold") == 1
    assert value(s, "rce_gate_decisions_total", wave=W, decision="fail") == 1
    assert value(s, "rce_gate_decisions_total", wave=W, decision="other") == 1
    assert value(s, "rce_wave_runs_total", wave=W, result="CANARY_GATE_FAILED") == 1
    assert value(s, "rce_wave_runs_total", wave="bulk", result="promoted") == 1
    assert value(s, "rce_wave_held_total", wave=W, by="kill_switch") == 1
    assert value(s, "rce_wave_held_total", wave=W, by="error_budget") == 1
    assert value(s, "rce_drift_total", kind="host_disconnected", repair="needs_human", outcome="flagged") == 2
    assert value(s, "rce_drift_total", kind="other", repair="exit_maintenance", outcome="repaired") == 1
    assert value(s, "rce_drift_open", kind="host_disconnected") == 1


def test_downstream_counters_written_by_any_process_are_served(ledger: Ledger) -> None:
    ledger.add_counters(increments_for("nsx", 503, 0.2))
    ledger.add_counters(increments_for("nsx", 200, 0.02))
    s = scrape(LedgerCollector(ledger))
    assert value(s, "rce_downstream_requests_total", service="nsx", status_class="5xx") == 1
    assert value(s, "rce_downstream_requests_total", service="nsx", status_class="2xx") == 1
    assert value(s, "rce_downstream_throttled_total", service="nsx", code="503") == 1
    assert value(s, "rce_downstream_request_duration_seconds_count", service="nsx") == 2
    assert value(s, "rce_downstream_request_duration_seconds_bucket", service="nsx", le="0.025") == 1
    assert value(s, "rce_downstream_request_duration_seconds_bucket", service="nsx", le="0.25") == 2
    assert value(s, "rce_downstream_request_duration_seconds_bucket", service="nsx", le="+Inf") == 2


def test_each_services_adaptive_limit_and_our_slots_on_it_are_served(ledger: Ledger) -> None:
    pacer = Pacer(ledger)
    for i in range(6):
        pacer.acquire("nsx", f"h{i}", RUN)
    pacer.acquire("esx", "e0", RUN)
    for _ in range(3):
        pacer.refused("nsx")
    s = scrape(LedgerCollector(ledger))
    assert value(s, "rce_downstream_concurrency_limit", service="nsx") == 3.0
    assert value(s, "rce_downstream_concurrency_limit", service="esx") == -1.0
    assert value(s, "rce_downstream_concurrency_limit", service="vcenter") == -1.0
    assert value(s, "rce_downstream_in_flight", service="nsx") == 6
    assert value(s, "rce_downstream_in_flight", service="esx") == 1
    assert value(s, "rce_downstream_in_flight", service="vcenter") == 0
    assert value(s, "rce_downstream_ceiling", service="nsx") == -1.0  # no pool size copied yet
    pacer.set_ceilings({"nsx": 30, "esx": 120}, "test")
    s = scrape(LedgerCollector(ledger))
    assert value(s, "rce_downstream_ceiling", service="nsx") == 30
    assert value(s, "rce_downstream_ceiling", service="esx") == 120
    assert value(s, "rce_downstream_ceiling", service="vcenter") == -1.0


def test_two_exporters_agree_and_later_events_are_counted_once(ledger: Ledger, clock: Clock) -> None:
    history(ledger, clock)
    first = LedgerCollector(ledger, now=clock)
    scrape(first)
    ledger.phase_succeeded(R, W, "sddc-3", RUN, Phase.UPGRADE_HOSTS)
    again, fresh = scrape(first), scrape(LedgerCollector(ledger, now=clock))
    assert again == fresh
    assert (
        value(again, "rce_phase_total", wave=W, phase="upgrade_hosts", outcome="succeeded", reason="none")
        == 1
    )
    assert value(again, "rce_phase_total", wave=W, phase="precheck", outcome="succeeded", reason="none") == 1


def test_wave_label_values_are_capped(ledger: Ledger) -> None:
    for i in range(5):
        ledger.append_event(R, f"w{i}", EventKind.WAVE_SUMMARY, run_id=RUN, data={})
    s = scrape(LedgerCollector(ledger, max_waves=3))
    waves = {dict(k[1]).get("wave") for k in s if k[0] == "rce_wave_runs_total"}
    assert waves == {"w0", "w1", "w2", "other"}
    assert value(s, "rce_wave_runs_total", wave="other", result="promoted") == 2


def test_no_sddc_id_ever_becomes_a_label(ledger: Ledger, clock: Clock) -> None:
    history(ledger, clock)
    s = scrape(LedgerCollector(ledger, now=clock))
    labels = {v for key in s for _, v in key[1]}
    assert not {v for v in labels if v.startswith("sddc-")}
    assert {k[0] for k in s} <= catalog.series_names()


def test_an_unreachable_ledger_reports_down_and_keeps_serving(tmp_path: Path) -> None:
    broken = Ledger(f"sqlite:///{tmp_path}/missing-dir-is-a-file/ledger.db")
    (tmp_path / "missing-dir-is-a-file").write_text("not a directory")
    s = scrape(LedgerCollector(broken))
    assert value(s, "rce_ledger_up") == 0
    assert (
        value(s, "rce_phase_max_seconds", phase="precheck") == catalog.DEFAULT_PHASE_MAX_SECONDS["precheck"]
    )
