"""The crash-resume soak's parts that need no Airflow: settings and the CLI's refusals, the
kill schedule, how processes are recognised and cleaned up, and the pass criteria. The soak
itself runs in tests/integration/test_crash_resume_soak.py."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from rce_lib.cli import main
from rce_lib.devenv.airflow_local import LocalAirflow
from rce_lib.devenv.processes import start_group
from rce_lib.devenv.soak import (
    DEFAULT_TIME_SCALE,
    KILL_KINDS,
    QUEUED_PATIENCE_S,
    Deployment,
    Kill,
    Proc,
    Soak,
    SoakError,
    SoakResult,
    SoakSettings,
    kill_kinds,
    kill_sessions,
    plan_soak,
    processes,
    started_twice,
    tree,
)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kills", "0"], "--kills must be at least 1"),
        (["--kills", "-3"], "--kills must be at least 1"),
        (["--sddcs", "0"], "--sddcs must be at least 1"),
        (["--sddcs", "1001"], "--sddcs must be at most 1000"),
        (["--minutes", "0"], "--minutes must be > 0"),
        (["--time-scale", "-5"], "--time-scale must be > 0"),
        (["--kinds", "scheduler,webserver"], "kill kinds must be some of"),
    ],
)
def test_the_cli_refuses_bad_arguments_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["soak", "--home", str(home), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rce soak: ") and message in err and len(err.strip().splitlines()) == 1
    assert not home.exists()  # refused before anything was created or started


def test_settings_refuse_an_empty_set_of_kinds(tmp_path: Path) -> None:
    with pytest.raises(SoakError, match="kill kinds"):
        SoakSettings(home=tmp_path, kinds=()).validate()
    with pytest.raises(SoakError, match="gap"):
        SoakSettings(home=tmp_path, gap_s=(10.0, 5.0)).validate()


def test_every_run_of_four_kills_holds_each_kind_once_and_the_seed_fixes_the_order() -> None:
    first = list(itertools.islice(kill_kinds(7, KILL_KINDS), 12))
    for block in (first[0:4], first[4:8], first[8:12]):
        assert sorted(block) == sorted(KILL_KINDS)
    assert first == list(itertools.islice(kill_kinds(7, KILL_KINDS), 12))
    assert first != list(itertools.islice(kill_kinds(8, KILL_KINDS), 12))
    ten = Counter(itertools.islice(kill_kinds(1, KILL_KINDS), 10))
    assert min(ten.values()) >= 2  # 10 kills: every kind at least twice
    assert set(itertools.islice(kill_kinds(3, ("task", "worker")), 6)) == {"task", "worker"}


def test_the_plan_takes_the_upgradable_sddcs_of_the_seeded_fleet(tmp_path: Path) -> None:
    plan = plan_soak(SoakSettings(home=tmp_path, sddcs=30))
    assert len(plan.cohort) == 30 and plan.fleet_size == 34  # 3 at 1.24.0 and 1 at 1.26.0 besides
    assert plan.cohort == sorted(plan.cohort) and "sddc-0009" not in plan.cohort
    assert plan.time_scale == DEFAULT_TIME_SCALE
    assert sum(plan.hosts.values()) == 133
    assert plan.floor_s > 60  # the deferred vCenter and NSX upgrades outlast the kills' pace


def test_the_long_mode_slows_the_simulator_and_spreads_the_kills(tmp_path: Path) -> None:
    short = plan_soak(SoakSettings(home=tmp_path, sddcs=30))
    long = plan_soak(SoakSettings(home=tmp_path, sddcs=30, kills=20, minutes=30))
    assert long.time_scale < short.time_scale
    assert long.floor_s == pytest.approx(30 * 60, rel=0.01)
    assert long.gap_s[0] > short.gap_s[0] and long.gap_s[1] > short.gap_s[1]
    given = plan_soak(SoakSettings(home=tmp_path, sddcs=30, minutes=30, time_scale=100.0))
    assert given.time_scale == 100.0


@pytest.mark.parametrize(
    ("title", "kind"),
    [
        ("/work/.venv/bin/python /work/.venv/bin/airflow scheduler", "scheduler"),
        ("/work/.venv/bin/python /work/.venv/bin/airflow triggerer", "triggerer"),
        ("airflow worker -- LocalExecutor: <idle>", "idle worker"),
        ("airflow worker -- LocalExecutor: 01a21650-4c59-7455-8ac6-125f0c0a0f6b", "worker"),
        ("airflow worker -- 01a21650-846e-7cc8-b8a8-a2096db1866b", "task"),
        ("airflow serve-logs", "log server"),
        ("airflow api_server -- host:0.0.0.0 port:8080", "other"),
        ("/work/.venv/bin/python /work/.venv/bin/airflow dag-processor", "other"),
    ],
)
def test_processes_are_recognised_by_the_titles_airflow_gives_them(title: str, kind: str) -> None:
    p = Proc(pid=10, ppid=1, sid=10, title=title)
    seen = {
        "scheduler": p.is_("scheduler"),
        "triggerer": p.is_("triggerer"),
        "idle worker": p.is_idle_worker,
        "worker": p.is_worker and not p.is_idle_worker,
        "task": p.is_task,
        "log server": p.is_log_server,
    }
    assert [k for k, v in seen.items() if v] == ([] if kind == "other" else [kind])


def test_tree_follows_children_whatever_their_group() -> None:
    procs = [Proc(1, 0, 1, "a"), Proc(2, 1, 1, "b"), Proc(3, 2, 1, "c"), Proc(4, 0, 1, "d")]
    assert [p.pid for p in tree(procs, 1)] == [1, 2, 3]
    assert tree(procs, 9) == []


def test_sessions_are_found_and_killed_with_their_own_process_groups() -> None:
    """What the soak's cleanup relies on: a child that moved to a process group of its own (as
    Airflow's task processes do) is still found by its session, and killed."""
    script = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import os, time; os.setpgid(0, 0); time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(found := processes({parent.pid})) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {p.ppid for p in found} >= {parent.pid}, found
        assert len({p.pid for p in found}) == 2
        kill_sessions({parent.pid})
        assert processes({parent.pid}) == []
    finally:
        parent.kill()
        parent.wait(timeout=10)


def test_components_that_died_are_found_by_their_titles(tmp_path: Path) -> None:
    """The watchdog's view: `airflow <component>` main processes of the deployment's sessions."""
    fake = tmp_path / "airflow"  # runs as `python .../airflow scheduler`, as the real ones show
    fake.write_text("import time\ntime.sleep(60)\n")
    deployment = Deployment(LocalAirflow(home=tmp_path, sim_url="http://127.0.0.1:1", sim_token="t"))
    try:
        for component in ("scheduler", "triggerer"):
            deployment.groups.append(
                start_group(
                    component,
                    [sys.executable, str(fake), component],
                    env=dict(os.environ),
                    log_path=tmp_path / f"{component}.log",
                )
            )
        deadline = time.monotonic() + 10
        while deployment.dead_components() != ["dag-processor", "api-server"]:
            assert time.monotonic() < deadline, deployment.dead_components()
            time.sleep(0.1)
        os.killpg(deployment.groups[1].pid, signal.SIGKILL)
        deployment.groups[1].proc.wait(timeout=10)
        assert deployment.dead_components() == ["triggerer", "dag-processor", "api-server"]
    finally:
        deployment.stop()
    assert deployment.procs() == []


def _result(**changes: object) -> SoakResult:
    result = SoakResult(
        settings={"kills": 2, "time_scale": 600.0, "seed": 1, "fleet_seed": 42, "fleet_size": 3, "hosts": 6},
        run_state="success",
        makespan_s=100.0,
        kills=[
            Kill(10.0, "scheduler", [1], "pid 1", "scheduler", 0.1, "scheduler", 7.0),
            Kill(20.0, "task", [2], "pid 2", "worker", 0.3),
        ],
        cohort=["sddc-0001", "sddc-0002"],
        duplicate_starts=0,
        retry_after_violations=0,
    )
    for key, value in changes.items():
        setattr(result, key, value)
    return result


def test_a_clean_result_passes_and_its_table_shows_every_criterion() -> None:
    result = _result()
    assert result.passed and result.failures() == []
    assert result.kills_by_kind == {"scheduler": 1, "worker": 0, "task": 1, "triggerer": 0}
    table = result.table()
    assert table.count("PASS  ") == len(result.criteria()) and "FAIL" not in table
    assert "scheduler restarted, back in 7 s" in table
    assert result.to_json()["passed"] is True


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({"kills": []}, "at least 2 kills landed during the wave"),
        ({"run_state": "failed"}, "the wave run succeeded"),
        ({"not_at_target": {"sddc-0002": "1.25.0"}}, "every upgradable SDDC at the target"),
        ({"cohort": []}, "every upgradable SDDC at the target"),
        ({"duplicate_starts": 1}, "duplicate starts == 0"),
        ({"started_twice": ["sddc-0010 SNAPSHOT x2"]}, "every downstream step started once"),
        ({"retry_after_violations": 2}, "Retry-After violations == 0"),
        ({"hosts_in_maintenance": ["h1"]}, "no host in maintenance"),
        ({"active_tasks_left": ["UPGRADE_HOST t-1"]}, "no downstream task left running"),
        ({"ledger_not_done": {"sddc-0001": "upgrade_hosts/running"}}, "ledger: every cohort SDDC succeeded"),
        ({"drift": ["sddc-0001: stale_claim"]}, "reconcile sweep (dry run) finds nothing"),
        ({"untouched_changed": ["sddc-0009"]}, "SDDCs outside the cohort untouched"),
        ({"error": "TimeoutError: x"}, "the soak ran to its end"),
    ],
)
def test_each_criterion_fails_the_soak_on_its_own(changes: dict[str, object], failed: str) -> None:
    result = _result(**changes)
    assert not result.passed
    assert [name for name, ok, _ in result.criteria() if not ok] == [failed]
    assert len(result.failures()) == 1 and result.failures()[0].startswith(failed)
    assert f"FAIL  {failed}" in result.table()


def test_a_fleet_never_read_passes_nothing() -> None:
    result = _result(duplicate_starts=-1, retry_after_violations=-1)
    failed = [name for name, ok, _ in result.criteria() if not ok]
    assert failed == [
        "every downstream step started once",
        "duplicate starts == 0",
        "Retry-After violations == 0",
    ]


def test_work_started_twice_is_named_per_sddc_step_and_host() -> None:
    def task(kind: str, host: str | None = None) -> dict[str, object]:
        return {"type": kind, "host_id": host}

    clean = [task("PRECHECK"), task("SNAPSHOT"), task("UPGRADE_VCENTER"), task("UPGRADE_NSX")]
    clean += [task("HOST_MAINTENANCE", "h1"), task("UPGRADE_HOST", "h1"), task("HOST_MAINTENANCE", "h1")]
    assert started_twice("sddc-0001", clean) == []
    again = [*clean, task("SNAPSHOT"), task("HOST_MAINTENANCE", "h1"), task("ROLLBACK")]
    assert started_twice("sddc-0001", again) == [
        "sddc-0001 HOST_MAINTENANCE h1 x3",
        "sddc-0001 ROLLBACK x1",
        "sddc-0001 SNAPSHOT x2",
    ]


class _AirflowApi:
    """Airflow's REST API as the soak's operator reads it (the network boundary)."""

    def __init__(self, tis: list[dict[str, object]]) -> None:
        self.tis = tis

    def request(
        self, method: str, path: str, params: dict[str, list[str]] | None = None, **_: object
    ) -> object:
        states = (params or {}).get("state") or []
        return {"task_instances": [ti for ti in self.tis if ti["state"] in states]}


def _ti(task: str, index: int, state: str, queued_s_ago: float | None) -> dict[str, object]:
    queued = None
    if queued_s_ago is not None:
        queued = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - queued_s_ago)) + "Z"
    return {"task_id": task, "map_index": index, "state": state, "queued_when": queued}


def test_the_operator_takes_for_lost_only_what_sat_queued_past_its_patience(tmp_path: Path) -> None:
    """A LocalExecutor worker killed after taking a task leaves it queued for good: the soak's
    operator clears it, as the runbook says, but not a task that was queued just now."""
    soak = Soak(SoakSettings(home=tmp_path, sddcs=4, kills=1))
    api = _AirflowApi(
        [
            _ti("bulk.postcheck", 2, "queued", QUEUED_PATIENCE_S + 30),
            _ti("bulk.upgrade_hosts", 3, "queued", 5),
            _ti("bulk.upgrade_nsx", 1, "running", QUEUED_PATIENCE_S + 60),
            _ti("bulk.precheck", 0, "queued", None),
        ]
    )
    soak.rest = api  # type: ignore[assignment]
    stuck = soak._stuck_in_queued(soak._task_instances("run-1", ["queued", "running"]))
    assert [(ti["task_id"], ti["map_index"]) for ti in stuck] == [("bulk.postcheck", 2)]
    assert soak.result.stuck_queued == ["bulk.postcheck[2]"]
    assert "bulk.postcheck[2]" in soak.result.table()


def test_a_run_that_did_not_end_says_what_it_waited_on(tmp_path: Path) -> None:
    soak = Soak(SoakSettings(home=tmp_path, sddcs=4, kills=1))
    deferred = _ti("bulk.upgrade_hosts", 1, "deferred", None)
    deferred["trigger"] = {"classpath": "rce_lib.triggers.phase.PhaseTrigger"}
    soak.rest = _AirflowApi(
        [deferred, _ti("bulk.postcheck", 0, "queued", 200), _ti("bulk.snapshot", 0, "success", None)]
    )  # type: ignore[assignment]
    soak.result.unfinished = soak._unfinished("run-1")
    assert soak.result.unfinished == [
        "bulk.upgrade_hosts[1]=deferred on PhaseTrigger",
        "bulk.postcheck[0]=queued",
    ]
    soak.result.run_state = "running"
    failed = dict((name, detail) for name, ok, detail in soak.result.criteria() if not ok)
    assert "bulk.upgrade_hosts[1]=deferred on PhaseTrigger" in failed["the wave run succeeded"]


def test_worker_and_task_kills_need_the_phases_on_workers(tmp_path: Path) -> None:
    """By default every phase runs in the triggerer: a worker or task kill would hit nothing of
    the wave, and the soak would pass off other kinds' kills as those."""
    assert SoakSettings(home=tmp_path).kinds == ("scheduler", "triggerer")
    with pytest.raises(SoakError, match="need --phases-on-workers"):
        SoakSettings(home=tmp_path, kinds=KILL_KINDS).validate()
    SoakSettings(home=tmp_path, kinds=KILL_KINDS, phases_on_workers=True).validate()
