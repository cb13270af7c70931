"""The wave DAG end to end under `airflow dags test` (a subprocess, as the README documents it),
against the fleet simulator running as a real process.

Each scenario gets its own copy of a migrated AIRFLOW_HOME (so its own metadata DB and
ledger), its own simulator and its own wave of a small plan. They are independent, so
the `runs` fixture runs them a few at a time; the tests then assert on the outcome.
Runs stay short: an `airflow dags test` process costs several seconds to start and
~0.3-0.5 s per task instance run, so cohorts are small and the simulator runs at time
scale 60000 (a host upgrade takes 20 ms): downstream tasks end within the phase's
inline wait instead of deferring.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest

from rce_lib.ledger.models import Phase, Status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TARGET = "1.26.0"
SOURCE = "1.25.0"
ROLLOUT = "it-rollout"
TIME_SCALE = 60000
FLEET_SIZE = 8
# sddc-0001: 4 hosts, 1 cluster; sddc-0003: 2 clusters of 2; sddc-0004 and sddc-0005: 3 hosts each.
HAPPY_IDS = ["sddc-0001", "sddc-0003", "sddc-0004", "sddc-0005"]
BAD_CANARY = ["sddc-0001", "sddc-0003"]  # no SDDC of the wave is labelled canary: the first by id
BAD_BULK = ["sddc-0004", "sddc-0005", "sddc-0006"]
BUDGET_IDS = ["sddc-0001", "sddc-0003", "sddc-0004", "sddc-0005"]

PLAN = f"""
rollout: {ROLLOUT}
release: {TARGET}
defaults:
  max_parallel: 4
  max_fail_percentage: 50
  bake_seconds: 0
  # min_effect 1.0: a healthy canary (error rate 0.001-0.01 in the simulator) can never read twice
  # the baseline's median, so a good release never fails the comparison by chance
  gate: {{max_error_rate: 0.05, max_p95_latency_ms: 800, min_samples: 3, sample_interval_seconds: 1,
          min_effect: 1.0, baseline_size: 6}}
waves:
  - name: happy
    selector: {{sddc_ids: [{", ".join(HAPPY_IDS)}]}}
    size: 4
    canary_size: 1
  - name: preview
    selector: {{}}
    size: 3
    max_parallel: 2
  - name: guarded
    selector: {{sddc_ids: [sddc-0004]}}
    size: 1
    max_parallel: 2
  - name: faulty
    selector: {{sddc_ids: [sddc-0004, sddc-0005]}}
    size: 2
  - name: sick
    selector: {{sddc_ids: [sddc-0005]}}
    size: 1
  - name: canary_bad
    selector: {{sddc_ids: [{", ".join(BAD_CANARY + BAD_BULK)}]}}
    size: 5
    canary_size: 2
  - name: unsure
    selector: {{sddc_ids: [sddc-0001, sddc-0004, sddc-0005]}}
    size: 3
    canary_size: 1
    gate: {{max_error_rate: 0.05, max_p95_latency_ms: 800, min_samples: 1000, inconclusive: fail}}
  - name: budget
    selector: {{sddc_ids: [{", ".join(BUDGET_IDS)}]}}
    size: 4
    max_fail_percentage: 25
    max_parallel: 1
  - name: halted
    selector: {{sddc_ids: [sddc-0004, sddc-0005]}}
    size: 2
"""

MUTATING_TYPES = (
    "PRECHECK",
    "SNAPSHOT",
    "UPGRADE_VCENTER",
    "UPGRADE_NSX",
    "HOST_MAINTENANCE",
    "UPGRADE_HOST",
)


# ------------------------------------------------------------------ helpers


def _output(proc: subprocess.CompletedProcess[str], lines: int = 80) -> str:
    text = (proc.stdout or "") + "\n----- stderr -----\n" + (proc.stderr or "")
    return "\n".join(text.splitlines()[-lines:])


def _release(sim: Any, version: str) -> dict[str, Any]:
    resp = sim.request("GET", f"/api/v1/releases/{version}")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _tasks(sim: Any, sddc_id: str) -> list[dict[str, Any]]:
    """Every downstream task of one SDDC, oldest first."""
    resp = sim.request("GET", f"/api/v1/sddcs/{sddc_id}/tasks?limit=200")
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    return sorted(items, key=lambda t: (_ts(t["created_at"]), t["id"]))


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _assert_at_release(sddc: dict[str, Any], release: dict[str, Any]) -> None:
    want = release["components"]
    assert sddc["version"] == release["version"], sddc
    assert sddc["status"] == "READY", sddc
    assert sddc["components"]["vcenter"] == want["vcenter"], sddc
    assert sddc["components"]["nsx"] == want["nsx"], sddc
    for host in sddc["hosts"]:
        assert host["version"] == want["esx"], host
        assert host["state"] == "CONNECTED", host


def _promotions(af: Any, wave: str) -> list[str]:
    """Runs that emitted the wave's promoted asset (Airflow's asset_event table)."""
    with sqlite3.connect(af.home / "airflow.db") as db:
        rows = db.execute(
            "SELECT ae.source_run_id FROM asset_event ae JOIN asset a ON a.id = ae.asset_id"
            " WHERE a.name = ? ORDER BY ae.id",
            (f"rce_wave_{wave}_promoted",),
        ).fetchall()
    return [row[0] for row in rows]


def _api_requests(sim: Any) -> int:
    """Contract API requests the simulator served (its /sim/ admin routes left out)."""
    return sum(r["count"] for r in sim.counters()["requests"] if r["route"].startswith("/api/"))


def _assert_clean_counters(sim: Any) -> None:
    counters = sim.counters()
    assert counters["duplicate_starts"]["count"] == 0, counters["duplicate_starts"]
    assert counters["retry_after_violations"]["count"] == 0, counters["retry_after_violations"]


# ------------------------------------------------------------------ the runs

INVALID_CONFS: dict[str, tuple[dict[str, Any], str]] = {
    "short-version": ({"target_version": "1.26"}, "target_version"),
    "path-version": ({"target_version": "../x"}, "target_version"),
    "path-id": ({"sddc_ids": ["../etc"]}, "sddc_ids"),
    "uppercase-id": ({"sddc_ids": ["SDDC-0004"]}, "sddc_ids"),
    "parallel-zero": ({"max_parallel": 0}, "max_parallel"),
    "parallel-above-plan": ({"max_parallel": 3}, "max_parallel"),  # the guarded wave's plan says 2
}

# name -> (wave, conf, faults injected before the run); longest first
SCENARIOS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "sick": ("sick", {}, {"unhealthy_release": TARGET}),
    "happy": ("happy", {}, {}),
    "faulty": (
        "faulty",
        {},
        {"fail_sddc_ids": ["sddc-0004"], "fail_task_types": ["UPGRADE_NSX"], "task_failure_retryable": False},
    ),
    "preview": ("preview", {"dry_run": True}, {}),
    # the release reads 0.03 worse in error rate: under the plan's 0.05, so every postcheck passes,
    # but far above the SDDCs not yet upgraded: only the gate's baseline comparison can catch it
    "canary-bad": ("canary_bad", {}, {"degraded_release": TARGET, "degraded_error_rate": 0.03}),
    "unsure": ("unsure", {}, {}),
    "budget": (
        "budget",
        {},
        {"fail_sddc_ids": BUDGET_IDS, "fail_task_types": ["PRECHECK"], "task_failure_retryable": False},
    ),
    "halted": ("halted", {}, {}),
    **{f"invalid-{name}": ("guarded", conf, {}) for name, (conf, _) in INVALID_CONFS.items()},
}
SCENARIO_ENV = {"halted": {"AIRFLOW_VAR_RCE_KILL_SWITCH_HALTED": "INC-42 bad build"}}
CONCURRENT_RUNS = 3  # independent runs (own simulator, own AIRFLOW_HOME) share the 2 cores


@dataclass
class Run:
    sim: Any
    af: Any
    before: dict[str, dict[str, Any]]
    proc: subprocess.CompletedProcess[str] | None = None


@pytest.fixture(scope="module")
def runs(module_sim_factory: Any, module_wave_airflow: Any) -> dict[str, Run]:
    """Every scenario run once, a few at a time, each on its own simulator and Airflow home."""
    prepared: dict[str, Run] = {}
    for name, (_, _, faults) in SCENARIOS.items():
        sim = module_sim_factory(size=FLEET_SIZE, time_scale=TIME_SCALE)
        if faults:
            sim.faults(**faults)
        prepared[name] = Run(sim=sim, af=module_wave_airflow(sim, PLAN), before=_fleet(sim))

    def run(name: str) -> None:
        wave, conf, _ = SCENARIOS[name]
        prepared[name].proc = prepared[name].af.dags_test(wave, conf, env=SCENARIO_ENV.get(name))

    with ThreadPoolExecutor(max_workers=CONCURRENT_RUNS) as pool:
        for future in [pool.submit(run, name) for name in SCENARIOS]:
            future.result()
    return prepared


def _fleet(sim: Any) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in sim.state()["sddcs"]}


# ------------------------------------------------------------------ a. happy path


@pytest.fixture(scope="module")
def happy(runs: dict[str, Run]) -> dict[str, Any]:
    """The `happy` wave's run, and what the simulator saw right after it."""
    run = runs["happy"]
    return {
        "sim": run.sim,
        "af": run.af,
        "proc": run.proc,
        "before": run.before,
        "tasks": {sddc_id: _tasks(run.sim, sddc_id) for sddc_id in HAPPY_IDS},
        "counters": run.sim.counters(),
        "promotions": _promotions(run.af, "happy"),
    }


def test_happy_wave_upgrades_every_member_to_the_target(happy: dict[str, Any]) -> None:
    proc, sim = happy["proc"], happy["sim"]
    assert proc.returncode == 0, _output(proc)
    target = _release(sim, TARGET)
    for sddc_id in HAPPY_IDS:
        _assert_at_release(sim.sddc(sddc_id), target)
    # SDDCs outside the wave were not touched
    for sddc in sim.state()["sddcs"]:
        if sddc["id"] not in HAPPY_IDS:
            assert sddc["version"] == happy["before"][sddc["id"]]["version"] == SOURCE


def test_happy_wave_never_starts_twice_nor_ignores_retry_after(happy: dict[str, Any]) -> None:
    counters = happy["counters"]
    assert happy["proc"].returncode == 0, _output(happy["proc"])
    assert counters["duplicate_starts"]["count"] == 0, counters["duplicate_starts"]
    assert counters["retry_after_violations"]["count"] == 0, counters["retry_after_violations"]
    # one task per operation: precheck, snapshot, vcenter, nsx per SDDC; 2 maintenance + 1 upgrade per host
    hosts = sum(len(happy["before"][i]["hosts"]) for i in HAPPY_IDS)
    created = counters["tasks_created"]
    n = len(HAPPY_IDS)
    assert {t: created.get(t, 0) for t in MUTATING_TYPES} == {
        "PRECHECK": n,
        "SNAPSHOT": n,
        "UPGRADE_VCENTER": n,
        "UPGRADE_NSX": n,
        "HOST_MAINTENANCE": 2 * hosts,
        "UPGRADE_HOST": hosts,
    }


def test_happy_wave_leaves_no_host_in_maintenance(happy: dict[str, Any]) -> None:
    state = happy["sim"].state()
    in_maintenance = [h["id"] for s in state["sddcs"] for h in s["hosts"] if h["state"] != "CONNECTED"]
    assert in_maintenance == []
    assert state["active_tasks"] == []


def test_happy_wave_calls_the_api_in_contract_order(happy: dict[str, Any]) -> None:
    for sddc_id in HAPPY_IDS:
        tasks = happy["tasks"][sddc_id]
        assert all(t["status"] == "SUCCEEDED" for t in tasks), tasks
        sddc_level = [t["type"] for t in tasks if t["host_id"] is None]
        assert sddc_level == ["PRECHECK", "SNAPSHOT", "UPGRADE_VCENTER", "UPGRADE_NSX"], (sddc_id, sddc_level)
        nsx = next(t for t in tasks if t["type"] == "UPGRADE_NSX")
        host_tasks = [t for t in tasks if t["host_id"] is not None]
        # every host task starts after NSX finished
        assert all(_ts(t["created_at"]) >= _ts(nsx["updated_at"]) for t in host_tasks), sddc_id
        by_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for t in host_tasks:
            by_host[t["host_id"]].append(t)
        hosts = {h["id"]: h for h in happy["before"][sddc_id]["hosts"]}
        assert set(by_host) == set(hosts), sddc_id
        windows: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
        for host_id, seq in by_host.items():
            # enter maintenance < upgrade < exit maintenance, each started after the previous ended
            assert [t["type"] for t in seq] == ["HOST_MAINTENANCE", "UPGRADE_HOST", "HOST_MAINTENANCE"], seq
            for earlier, later in pairwise(seq):
                assert _ts(later["created_at"]) >= _ts(earlier["updated_at"]), (earlier, later)
            windows[hosts[host_id]["cluster_id"]].append(
                (_ts(seq[0]["created_at"]), _ts(seq[-1]["updated_at"]), host_id)
            )
        # within a cluster, maintenance windows never overlap
        for cluster, spans in windows.items():
            spans.sort()
            for (_, end, first), (start, _, second) in pairwise(spans):
                assert start >= end, f"{cluster}: {second} entered maintenance before {first} left it"


def test_happy_wave_ledger_shows_every_member_done(happy: dict[str, Any]) -> None:
    ledger = happy["af"].ledger()
    rows = {p.sddc_id: p for p in ledger.list_progress(rollout=ROLLOUT, wave="happy")}
    assert sorted(rows) == HAPPY_IDS
    for sddc_id, progress in rows.items():
        assert (progress.status, progress.phase) == (Status.SUCCEEDED, Phase.DONE), progress
        assert progress.source_version == SOURCE and progress.target_version == TARGET
        assert progress.snapshot_id, progress
        started = ledger.events(rollout=ROLLOUT, wave="happy", sddc_id=sddc_id, kinds=["task_started"])
        slots = sorted((e.phase.value if e.phase else "", e.data["host_id"]) for e in started)
        expected = [
            (p.value, "") for p in (Phase.PRECHECK, Phase.SNAPSHOT, Phase.UPGRADE_VCENTER, Phase.UPGRADE_NSX)
        ]
        expected += [
            (Phase.UPGRADE_HOSTS.value, f"{host['id']}/{action}")
            for host in happy["before"][sddc_id]["hosts"]
            for action in ("enter", "upgrade", "exit")
        ]
        assert slots == sorted(expected), sddc_id  # each operation started exactly once
    assert ledger.active_claims() == {}


def test_happy_wave_emits_its_promoted_asset_once(happy: dict[str, Any]) -> None:
    assert happy["proc"].returncode == 0, _output(happy["proc"])
    assert len(happy["promotions"]) == 1


def test_second_run_of_a_finished_wave_changes_nothing(happy: dict[str, Any]) -> None:
    sim, af = happy["sim"], happy["af"]
    assert happy["proc"].returncode == 0, _output(happy["proc"])
    before = sim.counters()["mutating_calls"]
    proc = af.dags_test("happy")
    assert proc.returncode == 0, _output(proc)
    assert sim.counters()["mutating_calls"] == before
    resolved = af.ledger().events(rollout=ROLLOUT, wave="happy", kinds=["cohort_resolved"])
    assert len(resolved) == 2
    last = resolved[-1].data
    assert last["members"] == []
    assert sorted(e["sddc_id"] for e in last["excluded"] if e["reason"] == "ALREADY_AT_TARGET") == HAPPY_IDS
    _assert_clean_counters(sim)


# ------------------------------------------------------------------ b. dry run


def test_dry_run_previews_the_cohort_and_changes_nothing(runs: dict[str, Run]) -> None:
    sim, af, proc = runs["preview"].sim, runs["preview"].af, runs["preview"].proc
    assert proc is not None
    assert proc.returncode == 0, _output(proc)
    counters = sim.counters()
    assert counters["mutating_calls"] == 0
    assert {r["method"] for r in counters["requests"] if r["route"].startswith("/api/")} == {"GET"}
    ledger = af.ledger()
    previews = ledger.events(rollout=ROLLOUT, wave="preview", kinds=["cohort_preview"])
    assert len(previews) == 1
    assert [m["sddc_id"] for m in previews[0].data["members"]] == ["sddc-0002", "sddc-0001", "sddc-0003"]
    # the same preview as `rce plan`: in the task log as markdown, and as the XCom `preview`
    assert "### Dry run of wave `preview`: nothing changed" in proc.stdout
    assert "| 1 | sddc-0002 | bulk |" in proc.stdout
    with sqlite3.connect(af.home / "airflow.db") as db:
        (value,) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = 'rce_wave_preview' AND task_id = 'resolve_cohort'"
            " AND key = 'preview'"
        ).fetchone()
    xcom = json.loads(value)
    assert xcom == previews[0].data
    assert [m["sddc_id"] for m in xcom["members"]] == ["sddc-0002", "sddc-0001", "sddc-0003"]
    assert {e["reason"] for e in xcom["excluded"]} == {"OVER_SIZE"}
    assert ledger.list_progress(rollout=ROLLOUT, wave="preview") == []
    assert ledger.active_claims() == {}
    # a preview must not promote the wave: that would start its after: waves for real
    assert _promotions(af, "preview") == []


# ------------------------------------------------------------------ c. invalid params


@pytest.mark.parametrize("case", list(INVALID_CONFS))
def test_invalid_params_are_refused_before_any_task_runs(runs: dict[str, Run], case: str) -> None:
    run = runs[f"invalid-{case}"]
    sim, af, proc = run.sim, run.af, run.proc
    param = INVALID_CONFS[case][1]
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    out = (proc.stdout or "") + (proc.stderr or "")
    assert "ParamValidationError" in out and param in out, _output(proc)
    assert sim.counters()["mutating_calls"] == 0
    assert _api_requests(sim) == 0  # not even resolve_cohort's reads: no task ran
    ledger_file = af.home / "rce_ledger.db"
    if ledger_file.exists():
        assert af.ledger().events(rollout=ROLLOUT) == []


# ------------------------------------------------------------------ d. downstream failure -> rollback


def test_failed_nsx_upgrade_rolls_back_and_the_wave_ends_within_budget(runs: dict[str, Run]) -> None:
    """fail_sddc_ids + fail_task_types: sddc-0004's UPGRADE_NSX task ends FAILED, not retryable.
    1 of 2 failed is 50%, not more than the plan's max_fail_percentage 50: the wave is promoted."""
    sim, af, proc = runs["faulty"].sim, runs["faulty"].af, runs["faulty"].proc
    assert proc is not None
    assert proc.returncode == 0, _output(proc)

    _assert_at_release(sim.sddc("sddc-0004"), _release(sim, SOURCE))
    _assert_at_release(sim.sddc("sddc-0005"), _release(sim, TARGET))
    _assert_clean_counters(sim)

    failed_types = [t["type"] for t in _tasks(sim, "sddc-0004")]
    assert failed_types == ["PRECHECK", "SNAPSHOT", "UPGRADE_VCENTER", "UPGRADE_NSX", "ROLLBACK"]
    assert "UPGRADE_HOST" not in failed_types

    ledger = af.ledger()
    rows = {p.sddc_id: p for p in ledger.list_progress(rollout=ROLLOUT, wave="faulty")}
    assert rows["sddc-0004"].status is Status.ROLLED_BACK, rows["sddc-0004"]
    assert (rows["sddc-0005"].status, rows["sddc-0005"].phase) == (Status.SUCCEEDED, Phase.DONE)
    verdicts = ledger.events(rollout=ROLLOUT, wave="faulty", sddc_id="sddc-0004", kinds=["phase_verdict"])
    assert [(e.phase, e.data["code"]) for e in verdicts] == [(Phase.UPGRADE_NSX, "UPGRADE_FAILED")]
    assert ledger.active_claims() == {}
    summary = ledger.events(rollout=ROLLOUT, wave="faulty", kinds=["wave_summary"])[-1].data
    assert summary["reason"] is None and summary["verdict"].startswith("promoted: 1 of 2 failed"), summary
    assert len(_promotions(af, "faulty")) == 1


# ------------------------------------------------------------------ e. unhealthy release -> rollback


def test_unhealthy_release_fails_postcheck_and_rolls_back(runs: dict[str, Run]) -> None:
    """unhealthy_release: every SDDC at 1.26.0 reports UNHEALTHY health."""
    sim, af, proc = runs["sick"].sim, runs["sick"].af, runs["sick"].proc
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    assert "ERROR_BUDGET_EXHAUSTED" in proc.stdout + proc.stderr, _output(proc)

    _assert_at_release(sim.sddc("sddc-0005"), _release(sim, SOURCE))
    _assert_clean_counters(sim)
    types = [t["type"] for t in _tasks(sim, "sddc-0005")]
    assert types[-1] == "ROLLBACK" and "UPGRADE_HOST" in types

    ledger = af.ledger()
    progress = ledger.get(ROLLOUT, "sick", "sddc-0005")
    assert progress is not None and progress.status is Status.ROLLED_BACK, progress
    verdicts = ledger.events(rollout=ROLLOUT, wave="sick", sddc_id="sddc-0005", kinds=["phase_verdict"])
    assert [(e.phase, e.data["reason"]) for e in verdicts] == [(Phase.POSTCHECK, "POSTCHECK_UNHEALTHY")]
    unhealthy = ledger.events(
        rollout=ROLLOUT, wave="sick", sddc_id="sddc-0005", kinds=["postcheck_unhealthy"]
    )
    assert len(unhealthy) == 3  # health_checks: judged three times before failing
    assert _promotions(af, "sick") == []


# ------------------------------------------------------------------ f. the canary gate


def _decisions(af: Any, wave: str) -> list[dict[str, Any]]:
    return [e.data for e in af.ledger().events(rollout=ROLLOUT, wave=wave, kinds=["gate_decision"])]


def _checks(decision: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in decision["checks"]}


def test_happy_canary_gate_holds_for_samples_then_passes(happy: dict[str, Any]) -> None:
    """One canary SDDC gives one reading per sample: the comparison holds (inconclusive) until
    min_samples 3 readings are in, then passes; only then did the bulk start."""
    decisions = _decisions(happy["af"], "happy")
    decisions = [d for d in decisions if d["run_id"] == decisions[0]["run_id"]]  # not the re-run's
    assert [d["decision"] for d in decisions][-1] == "pass", decisions
    holds = decisions[:-1]
    assert holds and all(d["decision"] == "inconclusive" and d["holding"] for d in holds), decisions
    final = _checks(decisions[-1])
    assert final == {
        "failure_rate": "pass",
        "health": "pass",
        "phase_latency": "pass",
        "baseline_error_rate": "pass",
        "baseline_p95_latency_ms": "pass",
    }
    # the bulk SDDCs' first downstream task came after the gate's decision
    decided = _ts(decisions[-1]["decided_at"])
    canary = "sddc-0001"
    for sddc_id in HAPPY_IDS:
        first = _ts(happy["tasks"][sddc_id][0]["created_at"])
        assert (first < decided) == (sddc_id == canary), (sddc_id, first, decided)


def test_bad_release_stops_at_the_canary_and_is_rolled_back(runs: dict[str, Run]) -> None:
    run = runs["canary-bad"]
    sim, af, proc = run.sim, run.af, run.proc
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    assert "CANARY_GATE_FAILED" in proc.stdout + proc.stderr, _output(proc)
    source = _release(sim, SOURCE)
    for sddc_id in BAD_CANARY:  # upgraded, passed postcheck, then restored by canary_rollback
        _assert_at_release(sim.sddc(sddc_id), source)
        types = [t["type"] for t in _tasks(sim, sddc_id)]
        assert "UPGRADE_HOST" in types and types[-1] == "ROLLBACK", (sddc_id, types)
    for sddc_id in BAD_BULK:  # never touched: not one downstream task
        assert _tasks(sim, sddc_id) == [], sddc_id
        assert sim.sddc(sddc_id)["version"] == SOURCE
    _assert_clean_counters(sim)

    decision = _decisions(af, "canary_bad")[-1]
    assert decision["decision"] == "fail" and not decision["holding"], decision
    checks = _checks(decision)
    # every SDDC was within the absolute thresholds: the statistical comparison caught it
    assert checks["health"] == "pass" and checks["failure_rate"] == "pass", decision
    assert checks["baseline_error_rate"] == "fail", decision
    ledger = af.ledger()
    rows = {p.sddc_id: p for p in ledger.list_progress(rollout=ROLLOUT, wave="canary_bad")}
    assert {i: rows[i].status for i in BAD_CANARY} == dict.fromkeys(BAD_CANARY, Status.ROLLED_BACK)
    assert {i: rows[i].status for i in BAD_BULK} == dict.fromkeys(BAD_BULK, Status.PENDING)
    assert len(ledger.events(rollout=ROLLOUT, wave="canary_bad", kinds=["canary_rollback"])) == 2
    summary = ledger.events(rollout=ROLLOUT, wave="canary_bad", kinds=["wave_summary"])[-1].data
    assert summary["reason"] == "CANARY_GATE_FAILED", summary
    assert _promotions(af, "canary_bad") == []  # the next wave does not start


def test_inconclusive_gate_fails_closed_when_the_plan_says_so(runs: dict[str, Run]) -> None:
    """min_samples 1000 can never be met: with `inconclusive: fail` the gate fails at once and
    the (healthy) canary is restored; the rest of the wave is never touched."""
    run = runs["unsure"]
    sim, af, proc = run.sim, run.af, run.proc
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    assert "GATE_INCONCLUSIVE" in proc.stdout + proc.stderr, _output(proc)
    decisions = _decisions(af, "unsure")
    assert len(decisions) == 1 and decisions[0]["decision"] == "inconclusive", decisions
    assert not decisions[0]["holding"]
    _assert_at_release(sim.sddc("sddc-0001"), _release(sim, SOURCE))
    assert _tasks(sim, "sddc-0004") == [] and _tasks(sim, "sddc-0005") == []
    assert _promotions(af, "unsure") == []


# ------------------------------------------------------------------ g. error budget and kill switch


def test_error_budget_stops_new_sddcs_once_spent(runs: dict[str, Run]) -> None:
    """Every precheck of the wave would fail. Budget 25% of 4: the first failure (25%) is within it,
    the second (50%) spends it; the two SDDCs after that are never started and the run fails.
    (Which two run first is up to Airflow's scheduling; the count is not.)"""
    run = runs["budget"]
    sim, af, proc = run.sim, run.af, run.proc
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    assert "ERROR_BUDGET_EXHAUSTED" in proc.stdout + proc.stderr, _output(proc)
    ledger = af.ledger()
    rows = {p.sddc_id: p for p in ledger.list_progress(rollout=ROLLOUT, wave="budget")}
    started = sorted(i for i in BUDGET_IDS if _tasks(sim, i))
    skipped = sorted(i for i in BUDGET_IDS if not _tasks(sim, i))
    assert len(started) == 2 and len(skipped) == 2, (started, skipped)
    for sddc_id in started:
        assert [t["type"] for t in _tasks(sim, sddc_id)] == ["PRECHECK"], sddc_id
        assert rows[sddc_id].status is Status.FAILED, rows[sddc_id]
    for sddc_id in skipped:
        row = rows[sddc_id]
        assert row.status is Status.SKIPPED and row.last_error is not None, row
        assert row.last_error.code == "ERROR_BUDGET_EXHAUSTED", row
        assert "2 of 4 SDDC(s) of this run failed (50%)" in row.last_error.message, row
    summary = ledger.events(rollout=ROLLOUT, wave="budget", kinds=["wave_summary"])[-1].data
    assert summary["reason"] == "ERROR_BUDGET_EXHAUSTED", summary
    assert _promotions(af, "budget") == []


def test_kill_switch_starts_nothing_and_says_how_to_resume(runs: dict[str, Run]) -> None:
    run = runs["halted"]
    sim, af, proc = run.sim, run.af, run.proc
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    out = proc.stdout + proc.stderr
    assert "KILL_SWITCH" in out and "INC-42 bad build" in out, _output(proc)
    assert sim.counters()["mutating_calls"] == 0
    ledger = af.ledger()
    rows = ledger.list_progress(rollout=ROLLOUT, wave="halted")
    assert {r.sddc_id: (r.last_error.code if r.last_error else None) for r in rows} == {
        "sddc-0004": "KILL_SWITCH",
        "sddc-0005": "KILL_SWITCH",
    }
    # switch off: the next run resumes the same SDDCs to the end
    again = af.dags_test("halted")
    assert again.returncode == 0, _output(again)
    for sddc_id in ("sddc-0004", "sddc-0005"):
        _assert_at_release(sim.sddc(sddc_id), _release(sim, TARGET))
    assert len(_promotions(af, "halted")) == 1
