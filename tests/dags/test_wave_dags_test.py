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

PLAN = f"""
rollout: {ROLLOUT}
release: {TARGET}
defaults:
  max_parallel: 4
  max_fail_percentage: 50
  bake_seconds: 0
  gate: {{max_error_rate: 0.05, max_p95_latency_ms: 800}}
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
    **{f"invalid-{name}": ("guarded", conf, {}) for name, (conf, _) in INVALID_CONFS.items()},
}
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
        prepared[name].proc = prepared[name].af.dags_test(wave, conf)

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
    assert sim.counters()["mutating_calls"] == 0
    ledger = af.ledger()
    previews = ledger.events(rollout=ROLLOUT, wave="preview", kinds=["cohort_preview"])
    assert len(previews) == 1
    assert [m["sddc_id"] for m in previews[0].data["members"]] == ["sddc-0002", "sddc-0001", "sddc-0003"]
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


def test_failed_nsx_upgrade_rolls_that_sddc_back(runs: dict[str, Run]) -> None:
    """fail_sddc_ids + fail_task_types: sddc-0004's UPGRADE_NSX task ends FAILED, not retryable."""
    sim, af, proc = runs["faulty"].sim, runs["faulty"].af, runs["faulty"].proc
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    assert "WAVE_INCOMPLETE" in proc.stdout + proc.stderr, _output(proc)

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
    assert _promotions(af, "faulty") == []  # a failed wave does not start its after: waves


# ------------------------------------------------------------------ e. unhealthy release -> rollback


def test_unhealthy_release_fails_postcheck_and_rolls_back(runs: dict[str, Run]) -> None:
    """unhealthy_release: every SDDC at 1.26.0 reports UNHEALTHY health."""
    sim, af, proc = runs["sick"].sim, runs["sick"].af, runs["sick"].proc
    assert proc is not None
    assert proc.returncode != 0, _output(proc)
    assert "WAVE_INCOMPLETE" in proc.stdout + proc.stderr, _output(proc)

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
