"""doc_md of the wave DAG and its tasks: every task explains itself and how to resume."""

from __future__ import annotations

from rce_lib.dag_factory import build_wave_dag
from rce_lib.plan.model import parse_plan

PLAN = parse_plan(
    {
        "rollout": "docs",
        "release": "1.26.0",
        "defaults": {
            "max_parallel": 2,
            "max_fail_percentage": 20,
            "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
        },
        "waves": [
            {"name": "first", "size": 4, "canary_size": 1, "approval": {"timeout_seconds": 600}},
            {"name": "second", "schedule": "after:first", "size": 2},
        ],
    }
)


def test_every_task_of_the_wave_dag_has_doc_md() -> None:
    dag = build_wave_dag(PLAN, PLAN.wave("first"))
    missing = [task.task_id for task in dag.tasks if not (task.doc_md or "").strip()]
    assert missing == []
    assert "approve_promotion" in dag.task_dict


def test_dag_doc_explains_gate_approval_resume_kill_switch_and_dry_run() -> None:
    doc = build_wave_dag(PLAN, PLAN.wave("first")).doc_md or ""
    for needle in (
        "canary_gate",
        "approve_promotion",
        "clear the failed task",
        "rce_kill_switch_first",
        "Dry run",
        "rce plan --wave first",
    ):
        assert needle in doc, needle
    assert "starts by itself when wave `first` is promoted" in (
        build_wave_dag(PLAN, PLAN.wave("second")).doc_md or ""
    )


def test_phase_docs_say_how_to_resume_and_stop() -> None:
    dag = build_wave_dag(PLAN, PLAN.wave("first"))
    for task_id in ("canary.precheck", "bulk.upgrade_hosts"):
        doc = dag.get_task(task_id).doc_md or ""
        assert "Only failed" in doc and "rce_kill_switch_first" in doc, task_id
    assert "Pool `rce_esx`" in (dag.get_task("bulk.upgrade_hosts").doc_md or "")
    assert "crashed" in (dag.get_task("canary_gate").doc_md or "")
