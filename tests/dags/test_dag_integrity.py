"""Every DAG file imports cleanly; the wave DAGs match the rollout plan; a bad plan is one
clear import error for dags/rce_waves.py only.

DagBag only parses files (no metadata DB, no network). Airflow 3.3's DagBag has no
`include_examples` argument any more: it only scans the folder it is given, and
AIRFLOW__CORE__LOAD_EXAMPLES is off as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Asset, TriggerRule
from airflow.sdk.definitions.param import process_params
from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable
from airflow.serialization.serialized_objects import DagSerialization

from rce_lib.api.models import SDDC_ID_PATTERN, VERSION_PATTERN
from rce_lib.api.services import POOL_FOR_SERVICE
from rce_lib.dag_factory import promoted_asset
from rce_lib.plan.loader import PLAN_ENV, clear_plan_cache, load_plan
from rce_lib.plan.model import RolloutPlan

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
PLAN_FILE = REPO / "include" / "rollout.yaml"
POOLS_FILE = REPO / "include" / "pools.json"
AIRFLOW_DEFAULT_POOL = "default_pool"  # created by `airflow db migrate`, not by pools.json
PHASE_TASKS = (
    "precheck",
    "snapshot",
    "upgrade_vcenter",
    "upgrade_nsx",
    "upgrade_hosts",
    "postcheck",
    "rollback",
)


@pytest.fixture(autouse=True)
def _plain_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's plan, examples off, a fresh plan cache."""
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.delenv(PLAN_ENV, raising=False)
    monkeypatch.delenv("RCE_INCLUDE_DIR", raising=False)
    clear_plan_cache()


def _bag(folder: Path, known_pools: set[str] | None = None) -> DagBag:
    bag = DagBag(dag_folder=folder, known_pools=known_pools)
    for stat in bag.dagbag_stats:
        print(f"parsed {stat.file}: {stat.dag_num} DAG(s), {stat.task_num} task(s) in {stat.duration}")
    return bag


@pytest.fixture(scope="module")
def plan() -> RolloutPlan:
    return load_plan(PLAN_FILE)


@pytest.fixture(scope="module")
def pools() -> set[str]:
    return set(json.loads(POOLS_FILE.read_text()))


@pytest.fixture
def bag(pools: set[str]) -> DagBag:
    return _bag(DAGS_DIR, known_pools=pools | {AIRFLOW_DEFAULT_POOL})


def test_every_dag_file_imports_without_error(bag: DagBag) -> None:
    assert bag.import_errors == {}
    files = sorted(p.name for p in DAGS_DIR.glob("*.py"))
    parsed = sorted(Path(stat.file).name for stat in bag.dagbag_stats)
    assert parsed == files
    assert all(stat.dag_num > 0 for stat in bag.dagbag_stats), bag.dagbag_stats


def test_every_task_pool_exists(bag: DagBag, pools: set[str]) -> None:
    assert bag.dag_warnings == set()
    for dag in bag.dags.values():
        for task in dag.tasks:
            assert task.pool in pools | {AIRFLOW_DEFAULT_POOL}, (dag.dag_id, task.task_id, task.pool)
            if task.task_id.startswith(("canary.", "bulk.", "canary_rollback")):
                # every task that talks to the fleet per SDDC is capped by its service's pool
                assert task.pool in POOL_FOR_SERVICE.values(), (dag.dag_id, task.task_id, task.pool)


def test_service_pools_do_not_count_deferred_tasks() -> None:
    """An SDDC waiting to be admitted (its precheck deferred) must hold no service slot, or
    waiting SDDCs could fill the pool the admitted ones need to finish: a deadlock."""
    shipped = json.loads(POOLS_FILE.read_text())
    assert set(shipped) == set(POOL_FOR_SERVICE.values())
    assert all(pool["include_deferred"] is False for pool in shipped.values()), shipped


def test_unknown_pool_is_reported(pools: set[str]) -> None:
    """The pool check itself can fail: drop one pool and DagBag warns about it."""
    bag = _bag(DAGS_DIR, known_pools=(pools - {"rce_nsx"}) | {AIRFLOW_DEFAULT_POOL})
    assert bag.dag_warnings, "expected a NONEXISTENT_POOL warning for rce_nsx"
    assert all("rce_nsx" in w.message for w in bag.dag_warnings)


def test_one_wave_dag_per_plan_wave(bag: DagBag, plan: RolloutPlan) -> None:
    waves = sorted(d for d in bag.dag_ids if d.startswith("rce_wave_"))
    assert waves == sorted(f"rce_wave_{w.name}" for w in plan.effective_waves())
    assert sorted(set(bag.dag_ids) - set(waves)) == ["rce_reconcile"]
    for dag in (bag.dags[d] for d in waves):
        task_ids = {t.task_id for t in dag.tasks}
        groups = {f"{group}.{p}" for group in ("canary", "bulk") for p in PHASE_TASKS}
        wave_level = {"resolve_cohort", "canary_slice", "bulk_slice", "canary_gate", "canary_rollback"}
        assert task_ids == {*wave_level, "wave_summary", *groups}
        assert dag.max_active_runs == 1


def test_canary_slice_then_gate_then_bulk(bag: DagBag) -> None:
    """The bulk starts only after the gate succeeded; a failed gate triggers the canary rollback;
    the summary always runs and sees both."""
    for dag in (d for d in bag.dags.values() if d.dag_id.startswith("rce_wave_")):
        gate, rollback = dag.get_task("canary_gate"), dag.get_task("canary_rollback")
        assert gate.trigger_rule == TriggerRule.ALL_DONE
        assert gate.upstream_task_ids == {"canary.rollback", "canary.postcheck"}
        assert rollback.trigger_rule == TriggerRule.ONE_FAILED
        assert "canary_gate" in rollback.upstream_task_ids
        assert "canary_gate" in dag.get_task("bulk.precheck").upstream_task_ids
        assert dag.get_task("bulk.precheck").trigger_rule == TriggerRule.ALL_SUCCESS
        summary = dag.get_task("wave_summary")
        assert summary.trigger_rule == TriggerRule.ALL_DONE
        assert summary.upstream_task_ids == {"bulk.rollback", "bulk.postcheck", "canary_rollback"}


def test_approval_sits_between_gate_and_bulk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan_file = tmp_path / "rollout.yaml"
    plan_file.write_text(
        "rollout: r\nrelease: 1.26.0\n" + DEFAULTS + "waves:\n  - {name: first, size: 4, canary_size: 1,"
        " approval: {timeout_seconds: 600, on_timeout: approve}}\n  - {name: second, size: 2}\n"
    )
    monkeypatch.setenv(PLAN_ENV, str(plan_file))
    bag = _bag(DAGS_DIR)
    assert bag.import_errors == {}
    approve = bag.dags["rce_wave_first"].get_task("approve_promotion")
    assert approve.upstream_task_ids == {"canary_gate"}
    assert "bulk.precheck" in approve.downstream_task_ids
    assert approve.defaults == ["Approve"] and approve.response_timeout.total_seconds() == 600
    assert "canary_gate" in approve.body  # the approver sees the gate's evidence
    assert "approve_promotion" not in bag.dags["rce_wave_second"].task_ids


def test_wave_params_follow_the_plan(bag: DagBag, plan: RolloutPlan) -> None:
    for wave in plan.effective_waves():
        params = bag.dags[wave.dag_id].params
        target = params.get_param("target_version")
        assert target.value == plan.release == wave.release
        assert target.schema["pattern"] == VERSION_PATTERN
        assert params.get_param("max_parallel").schema["maximum"] == wave.max_parallel
        assert params.get_param("max_parallel").schema["minimum"] == 1
        assert params.get_param("sddc_ids").schema["items"]["pattern"] == SDDC_ID_PATTERN
        assert params.get_param("dry_run").value is False


def test_tasks_render_the_dags_params_without_a_copy_each(bag: DagBag, plan: RolloutPlan) -> None:
    dag = bag.dags[plan.effective_waves()[0].dag_id]
    serialized = DagSerialization.to_dict(dag)["dag"]
    assert serialized["params"], "the trigger form needs the DAG's params"
    assert [task["__var"]["task_id"] for task in serialized["tasks"] if "params" in task["__var"]] == []
    task = dag.get_task("canary.upgrade_nsx")
    rendered = process_params(dag, task, {"target_version": "9.9.9"}, suppress_exception=False)
    assert rendered["target_version"] == "9.9.9"
    assert rendered["dry_run"] is False


def test_after_waves_run_on_the_promoted_asset(bag: DagBag, plan: RolloutPlan) -> None:
    chained = [w for w in plan.effective_waves() if w.after]
    assert chained, "the repo plan chains waves with after:"
    for wave in plan.effective_waves():
        dag = bag.dags[wave.dag_id]
        if wave.after:
            assert isinstance(dag.timetable, AssetTriggeredTimetable)
            assert dag.schedule == [promoted_asset(wave.after)]
        elif wave.cron is None:
            assert dag.schedule is None
    # each wave's summary emits the asset its followers wait on
    for wave in plan.effective_waves():
        summary = bag.dags[wave.dag_id].get_task("wave_summary")
        assert summary.outlets == [promoted_asset(wave.name)]
        assert isinstance(summary.outlets[0], Asset)


TRIVIAL_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="trivial", start_date=datetime(2026, 1, 1), schedule=None):
    EmptyOperator(task_id="noop")
"""

DEFAULTS = (
    "defaults: {max_parallel: 2, max_fail_percentage: 20,"
    " gate: {max_error_rate: 0.05, max_p95_latency_ms: 800}}\n"
)
BAD_PLANS = {
    "bad-field": (
        "rollout: r\nrelease: 1.26.0\n"
        + DEFAULTS
        + "waves:\n  - {name: first, size: 2}\n  - {name: second, size: 2, max_parallel: 0}\n",
        "waves[1].max_parallel",
    ),
    "gate-error-rate-above-1": (
        "rollout: r\nrelease: 1.26.0\n"
        + DEFAULTS
        + "waves:\n  - {name: first, size: 2, gate: {max_error_rate: 1.5, max_p95_latency_ms: 800}}\n",
        "waves[0].gate.max_error_rate",
    ),
    "gate-negative-samples": (
        "rollout: r\nrelease: 1.26.0\n" + DEFAULTS + "waves:\n  - {name: first, size: 2,"
        " gate: {max_error_rate: 0.1, max_p95_latency_ms: 800, min_samples: -3}}\n",
        "waves[0].gate.min_samples",
    ),
    "canary-larger-than-wave": (
        "rollout: r\nrelease: 1.26.0\n" + DEFAULTS + "waves:\n  - {name: first, size: 2, canary_size: 3}\n",
        "waves[0].canary_size",
    ),
    "unknown-key": (
        "rollout: r\nrelease: 1.26.0\n" + DEFAULTS + "waves:\n  - {name: first, size: 2, max_paralel: 3}\n",
        "waves[0].max_paralel",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_malformed_plan_is_one_import_error_and_other_dags_still_load(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, field_path = BAD_PLANS[case]
    plan_file = tmp_path / "bad-rollout.yaml"
    plan_file.write_text(text)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAGS_DIR / "rce_waves.py", dags / "rce_waves.py")
    (dags / "trivial_dag.py").write_text(TRIVIAL_DAG)
    monkeypatch.setenv(PLAN_ENV, str(plan_file))

    bag = _bag(dags)

    assert len(bag.import_errors) == 1, bag.import_errors
    ((path, message),) = bag.import_errors.items()
    assert Path(path).name == "rce_waves.py"
    assert str(plan_file) in message
    assert field_path in message
    assert "[INVALID_PLAN]" in message
    assert bag.dag_ids == ["trivial"]
