"""A chaos fleet under one real `airflow dags test` wave, and a scan of everything the run
left behind for the API token.

The simulator (a real process) answers about 8% of API requests badly: 500s, 503s with a
Retry-After (in seconds or as an HTTP-date), slow answers and dropped connections; every
20 s a 2 s storm answers every request 429; every answer carries fields the contract does
not know; running tasks report a status the client has never heard of (`PAUSED`);
and every problem answer echoes the request's Authorization header back (`echo_auth`).

One wave runs once (module fixture) over 14 SDDCs of a 30-SDDC fleet: 12 upgradable ones
with 2 to 4 hosts (36 hosts), one at 1.24.0 (no upgrade path to 1.26.0) and one already at
1.26.0. (`airflow dags test` runs one task instance at a time and every host costs three
downstream tasks in a row: on this shared 2-core machine the 21 upgradable SDDCs of a
24-SDDC fleet, ~90 hosts, took 285 s, 15 SDDCs with 48 hosts 200 s, these 12 160-190 s
depending on the load from parallel work.) The tests then check
the pass criteria: at least 99% of the upgradable SDDCs done, any other failed with a named
reason code, no Retry-After violation, no duplicate start, no host left in maintenance; and
that the token (distinctive: `rce-secret-<uuid hex>`) was used but appears nowhere: task
logs and the run's output, XComs, rendered template fields, trigger kwargs, every table of
the metadata DB and of the ledger, and the exported metrics.
"""

from __future__ import annotations

import math
import sqlite3
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from rce_lib.errors import Reason
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.metrics.exporter import build_registry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1000)]

TARGET = "1.26.0"
ROLLOUT = "chaos-rollout"
FLEET_SIZE = 30
# the upgradable SDDCs (1.25.0) with 2-4 hosts; sddc-0009 is at 1.24.0, sddc-0020 at 1.26.0
UPGRADABLE = sorted(f"sddc-{n:04d}" for n in (1, 2, 4, 5, 7, 12, 16, 17, 18, 21, 24, 28))
NOT_UPGRADABLE = {"sddc-0009": "UPGRADE_PATH_NOT_SUPPORTED", "sddc-0020": "ALREADY_AT_TARGET"}
# At time scale 60000 every task ends before its first poll. A vCenter upgrade that takes three
# real seconds is still running at its first poll (1 s); later SDDCs' first polls wait for how
# long the last one took (the phase learns it), so the first one is the poll that surely sees a
# running task: every running task therefore reports the unknown status (rate 1.0; at 0.5, with
# about one running poll per wave, CI once saw none).
SIM_CONFIG = {"durations_s": {"UPGRADE_VCENTER": 180000}}
TIME_SCALE = 60000
TOKEN = f"rce-secret-{uuid.uuid4().hex}"

PLAN = f"""
rollout: {ROLLOUT}
release: {TARGET}
defaults:
  max_parallel: 8
  max_fail_percentage: 50
  bake_seconds: 0
  gate: {{max_error_rate: 0.05, max_p95_latency_ms: 800, min_samples: 3, sample_interval_seconds: 1,
          min_effect: 1.0, baseline_size: 6}}
waves:
  - name: chaos
    selector: {{sddc_ids: [{", ".join(UPGRADABLE + sorted(NOT_UPGRADABLE))}]}}
    size: 100%
    canary_size: 1
"""

# About 8% of API requests fail: 2% each of 500, 503 + Retry-After, slow (0.5 s) and dropped.
FAULTS: dict[str, Any] = {
    "error_rate": 0.02,
    "throttle_rate": 0.02,
    "throttle_retry_after_s": 1,
    "slow_rate": 0.02,
    "slow_ms": 500,
    "drop_rate": 0.02,
    "retry_after_format": "mixed",
    "storm_every_s": 20,
    "storm_duration_s": 2,
    "extra_fields": True,
    "unknown_task_status_rate": 1.0,
    "unknown_task_status": "PAUSED",
    "echo_auth": True,
}


@dataclass
class Chaos:
    sim: Any
    af: Any
    proc: subprocess.CompletedProcess[str]
    before: dict[str, dict[str, Any]]
    upgradable: list[str]
    counters: dict[str, Any]
    state: dict[str, Any]


def _output(proc: subprocess.CompletedProcess[str], lines: int = 80) -> str:
    text = (proc.stdout or "") + "\n----- stderr -----\n" + (proc.stderr or "")
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def chaos(module_sim_factory: Any, module_wave_airflow: Any) -> Chaos:
    sim = module_sim_factory(size=FLEET_SIZE, time_scale=TIME_SCALE, token=TOKEN, config=SIM_CONFIG)
    before = {s["id"]: s for s in sim.state()["sddcs"]}
    upgradable = sorted(i for i in UPGRADABLE if before[i]["version"] == "1.25.0")
    assert upgradable == UPGRADABLE and all(before[i]["status"] == "READY" for i in UPGRADABLE)
    af = module_wave_airflow(sim, PLAN)
    sim.faults(**FAULTS)
    proc = af.dags_test("chaos", timeout=900)
    sim.faults(reset=True)  # the assertions below read the simulator cleanly
    counters = sim.counters()
    api = [r for r in counters["requests"] if r["route"].startswith("/api/")]
    statuses: dict[str, int] = {}
    for r in api:
        statuses[r["status"]] = statuses.get(r["status"], 0) + r["count"]
    output = proc.stdout + proc.stderr
    print(
        f"chaos wave: exit {proc.returncode}; API requests {sum(statuses.values())} by status {statuses};"
        f" injected {counters['injected']}; client retries logged {output.count('retrying in')};"
        f" Retry-After violations {counters['retry_after_violations']['count']};"
        f" duplicate starts {counters['duplicate_starts']['count']}; task polls {counters.get('task_polls')}"
    )
    return Chaos(
        sim=sim,
        af=af,
        proc=proc,
        before=before,
        upgradable=upgradable,
        counters=counters,
        state=sim.state(),
    )


# ------------------------------------------------------------------ the pass criteria


def test_the_faults_really_happened(chaos: Chaos) -> None:
    injected = chaos.counters["injected"]
    for kind in ("error", "throttle", "drop", "storm", "unknown_status", "echo_auth"):
        assert injected.get(kind, 0) > 0, (kind, injected)
    assert sum(chaos.counters["http_429"].values()) > 0 and sum(chaos.counters["http_503"].values()) > 0
    assert len(chaos.upgradable) == 12


def test_at_least_99_percent_of_upgradable_sddcs_are_done(chaos: Chaos) -> None:
    release = chaos.sim.request("GET", f"/api/v1/releases/{TARGET}").json()["components"]
    rows = {p.sddc_id: p for p in chaos.af.ledger().list_progress(rollout=ROLLOUT, wave="chaos")}
    assert sorted(rows) == chaos.upgradable
    done = []
    for sddc_id in chaos.upgradable:
        sddc = next(s for s in chaos.state["sddcs"] if s["id"] == sddc_id)
        row = rows[sddc_id]
        if (row.status, row.phase) == (Status.SUCCEEDED, Phase.DONE):
            assert sddc["version"] == TARGET and sddc["components"]["vcenter"] == release["vcenter"], sddc
            assert all(h["version"] == release["esx"] for h in sddc["hosts"]), sddc
            done.append(sddc_id)
    assert len(done) >= math.ceil(0.99 * len(chaos.upgradable)), (done, _output(chaos.proc))
    # the two that cannot be upgraded were left out with their reason, and nothing outside the
    # cohort was touched
    resolved = chaos.af.ledger().events(rollout=ROLLOUT, wave="chaos", kinds=["cohort_resolved"])
    excluded = {e["sddc_id"]: e["reason"] for e in resolved[-1].data["excluded"]}
    assert excluded == NOT_UPGRADABLE
    for sddc in chaos.state["sddcs"]:
        if sddc["id"] not in chaos.upgradable:
            assert sddc["version"] == chaos.before[sddc["id"]]["version"]


def test_any_other_sddc_failed_with_a_named_reason(chaos: Chaos) -> None:
    known = {r.value for r in Reason}
    ledger = chaos.af.ledger()
    for row in ledger.list_progress(rollout=ROLLOUT, wave="chaos"):
        if row.status is Status.SUCCEEDED:
            continue
        assert row.last_error is not None, row
        events = ledger.events(rollout=ROLLOUT, wave="chaos", sddc_id=row.sddc_id)
        reasons = [e.data.get("reason") for e in events if e.kind in ("phase_verdict", "phase_error")]
        assert reasons and reasons[-1] in known, (row, reasons)
        assert "Traceback" not in row.last_error.message, row


def test_no_retry_after_violation_and_no_duplicate_start(chaos: Chaos) -> None:
    counters = chaos.counters
    assert counters["retry_after_violations"]["count"] == 0, counters["retry_after_violations"]
    assert counters["duplicate_starts"]["count"] == 0, counters["duplicate_starts"]


def test_no_host_left_in_maintenance_and_no_task_left_running(chaos: Chaos) -> None:
    hosts = [h["id"] for s in chaos.state["sddcs"] for h in s["hosts"] if h["state"] != "CONNECTED"]
    assert hosts == []
    assert chaos.state["active_tasks"] == []
    assert chaos.af.ledger().active_claims() == {}


def test_the_wave_run_succeeded(chaos: Chaos) -> None:
    assert chaos.proc.returncode == 0, _output(chaos.proc)


# ------------------------------------------------------------------ the secrets scan


def _db_text(path: Path) -> dict[str, list[str]]:
    """Every value of every row of every table of a SQLite file, as text (bytes decoded)."""
    out: dict[str, list[str]] = {}
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            values: list[str] = []
            for row in db.execute(f'SELECT * FROM "{table}"'):  # names from sqlite_master
                for value in row:
                    if isinstance(value, bytes):
                        values.append(value.decode("utf-8", errors="replace"))
                    elif value is not None:
                        values.append(str(value))
            out[table] = values
    return out


def _hits(where: str, texts: list[str]) -> list[str]:
    return [
        f"{where}: ...{t[max(0, t.find(TOKEN) - 80) : t.find(TOKEN) + 40]}..." for t in texts if TOKEN in t
    ]


def test_the_token_was_used(chaos: Chaos) -> None:
    """The scan below must not pass because the token never went anywhere: the simulator
    accepted it on every API request, and echoed it back in its problem answers."""
    api = [r for r in chaos.counters["requests"] if r["route"].startswith("/api/")]
    assert sum(r["count"] for r in api if r["status"] not in ("401", "dropped")) > 100
    assert not [r for r in api if r["status"] == "401"]
    assert chaos.counters["injected"]["echo_auth"] > 0


def test_the_token_is_in_no_task_log_nor_the_run_output(chaos: Chaos) -> None:
    """`airflow dags test` prints the task logs to its output (it writes no log file here);
    every file under AIRFLOW_HOME/logs is scanned all the same."""
    logs = [p for p in (chaos.af.home / "logs").rglob("*") if p.is_file()]
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    output = (chaos.proc.stdout or "") + (chaos.proc.stderr or "")
    # the scan reads real task logs, retries of echoed problems included
    assert "created (key" in output and "retrying in" in output, _output(chaos.proc)
    hits = [h for p, t in texts.items() for h in _hits(p, [t])]
    hits += _hits("dags test output", [output])
    assert hits == []


def test_the_token_is_nowhere_in_the_metadata_db(chaos: Chaos) -> None:
    """XComs, rendered template fields, trigger kwargs, and every other table of Airflow's DB."""
    tables = _db_text(chaos.af.home / "airflow.db")
    for table in ("xcom", "rendered_task_instance_fields", "task_instance", "dag_run"):
        assert tables.get(table), f"{table} is empty: the scan would prove nothing"
    assert "trigger" in tables  # the inline triggers of `dags test` may leave it empty
    hits = [h for table, values in tables.items() for h in _hits(table, values)]
    assert hits == []


def test_the_token_is_nowhere_in_the_ledger(chaos: Chaos) -> None:
    tables = _db_text(chaos.af.home / "rce_ledger.db")
    assert sum(len(v) for v in tables.values()) > 100
    hits = [h for table, values in tables.items() for h in _hits(table, values)]
    assert hits == []


def test_the_token_is_not_in_the_exported_metrics(chaos: Chaos) -> None:
    ledger_url = f"sqlite:///{chaos.af.home / 'rce_ledger.db'}"
    text = prometheus_client.generate_latest(build_registry(Ledger(ledger_url))).decode()
    assert "rce_" in text and len(text.splitlines()) > 20
    assert TOKEN not in text
