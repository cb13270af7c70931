"""Build one Airflow DAG per wave of the rollout plan.

Parsing must stay cheap (no network, no database): this module only reads the
plan file and declares tasks. Everything that talks to the fleet runs in tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from airflow.sdk import DAG, Asset, Param, TriggerRule, task_group
from airflow.sdk.definitions.param import ParamsDict

from rce_lib.api.models import SDDC_ID_PATTERN, VERSION_PATTERN
from rce_lib.api.services import POOL_FOR_SERVICE
from rce_lib.dag_docs import dag_doc, task_docs
from rce_lib.operators.approval import PromotionApprovalOperator
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.cohort import CohortSliceOperator, ResolveCohortOperator
from rce_lib.operators.components import NsxUpgradeOperator, VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.operators.postcheck import PostcheckOperator
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.operators.rollback import CanaryRollbackOperator, RollbackOperator
from rce_lib.operators.snapshot import SnapshotOperator
from rce_lib.operators.summary import WaveSummaryOperator
from rce_lib.plan.cohort import MAX_COHORT_IDS
from rce_lib.plan.model import RolloutPlan, Wave
from rce_lib.sensors.canary_gate import CanaryGateSensor
from rce_lib.triggers import start as start_trigger

START_DATE = datetime(2026, 1, 1)


def promoted_asset(wave_name: str) -> Asset:
    """The asset a wave emits when it ends within its error budget; `after:` waves run on it."""
    return Asset(name=f"rce_wave_{wave_name}_promoted", uri=f"rce://waves/{wave_name}/promoted")


def wave_params(wave: Wave) -> dict[str, Param]:
    """The trigger form. Airflow validates it before any task runs."""
    return {
        "target_version": Param(
            wave.release,
            type="string",
            pattern=VERSION_PATTERN,
            title="Target release",
            description="Release to upgrade to (X.Y.Z). Defaults to the plan's release.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Preview only: resolve_cohort logs what the run would take (as `rce plan`); "
            "nothing is claimed or changed.",
        ),
        "sddc_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "pattern": SDDC_ID_PATTERN},
            maxItems=MAX_COHORT_IDS,
            uniqueItems=True,
            title="Only these SDDCs",
            description="Optional: narrow the wave to these SDDC ids (they must match the wave's selector).",
        ),
        "max_parallel": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=wave.max_parallel,
            title="Max SDDCs in flight",
            description=f"Optional: lower the plan's max_parallel ({wave.max_parallel}); never raise it.",
        ),
    }


def _window_args(wave: Wave) -> dict[str, Any]:
    """What the disruptive phases need of the plan's maintenance-window settings."""
    args: dict[str, Any] = {
        "respect_maintenance_windows": wave.respect_maintenance_windows,
        "expected_phase_seconds": dict(wave.expected_phase_seconds),
        "missing_maintenance_window": wave.missing_maintenance_window,
    }
    return args


def _start_in_triggerer(phase: SddcPhaseOperator, wave: Wave) -> None:
    """Have the scheduler start `phase` in the triggerer (rce_lib.triggers.start): its plan
    arguments as they are, the target version (and the first phase's `max_parallel`) from the
    run's params, the cohort's size from `resolve_cohort`. A phase that starts downstream work
    does so under its service's ceiling."""
    static = {k: v for k, v in phase.phase_spec()["kwargs"].items() if k != "task_id" and _plain(v)}
    static["target_version"] = wave.release
    from_params = {"target_version": "target_version"}
    if "max_parallel" in phase.template_fields:
        static["max_parallel"] = wave.max_parallel
        from_params["max_parallel"] = "max_parallel"
    start_trigger.start_in_triggerer(
        phase,
        static,
        from_params=from_params,
        xcom_lengths={"cohort_size": "resolve_cohort"} if "cohort_size" in phase.template_fields else None,
        ceiling_of=phase.service.value if phase.starts_downstream_work else None,
    )


def _plain(value: Any) -> bool:
    """A plan value (not a template, not a mapped argument): the trigger takes it as it is."""
    if isinstance(value, str):
        return "{{" not in value
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float)


WINDOW_DOC = (
    "\n\n**Maintenance window:** waits (deferred, trigger `MaintenanceWindowTrigger`) until the SDDC's "
    "maintenance window is open with room for this phase's expected duration; the opening time is in "
    "the task log and in the ledger event `waiting_for_window`. A phase already under way is never held."
)


def _windowed_doc(docs: dict[str, str], task_id: str, wave: Wave) -> str:
    return docs[task_id] + (WINDOW_DOC if wave.respect_maintenance_windows else "")


def build_wave_dag(plan: RolloutPlan, wave: Wave, *, plan_path: str | None = None) -> DAG:
    """The DAG `rce_wave_<name>` for one wave."""
    schedule: Any = None
    if wave.after:
        schedule = [promoted_asset(wave.after)]
    elif wave.cron:
        schedule = wave.cron
    rollout, name = plan.rollout, wave.name
    docs = task_docs(wave)
    phase_args: dict[str, Any] = {
        "target_version": "{{ params.target_version }}",
        "rollout": rollout,
        "wave": name,
        "map_index_template": "{{ task.sddc_id }}",
    }
    with DAG(
        dag_id=wave.dag_id,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        max_active_tasks=max(16, wave.max_parallel * 4),
        params=wave_params(wave),
        tags=["rce", f"rollout:{rollout}", f"wave:{name}"],
        doc_md=dag_doc(plan, wave),
        default_args={"retries": 2, "retry_delay": timedelta(seconds=10), "owner": "rce"},
    ) as dag:
        cohort = ResolveCohortOperator(
            task_id="resolve_cohort",
            rollout=rollout,
            wave=name,
            target_version="{{ params.target_version }}",
            dry_run="{{ params.dry_run }}",
            sddc_ids="{{ params.sddc_ids }}",
            max_parallel="{{ params.max_parallel }}",
            plan_path=plan_path,
            doc_md=docs["resolve_cohort"],
        )

        # a task started in the triggerer finds its group's SDDC ids by these task ids
        canary_slice = CohortSliceOperator(
            task_id=start_trigger.slice_task_id("canary"), slice_name="canary", doc_md=docs["canary_slice"]
        )
        bulk_slice = CohortSliceOperator(
            task_id=start_trigger.slice_task_id("bulk"), slice_name="bulk", doc_md=docs["bulk_slice"]
        )
        cohort >> [canary_slice, bulk_slice]
        canary_ids, bulk_ids = canary_slice.output, bulk_slice.output

        cohort_size = "{{ ti.xcom_pull(task_ids='resolve_cohort') | length }}"
        windowed = _window_args(wave)

        @task_group(group_id="sddc")
        def sddc_upgrade(sddc_id: str) -> None:
            common = {**phase_args, "sddc_id": sddc_id}
            phases = [
                PrecheckOperator(
                    task_id="precheck",
                    max_parallel=f"{{{{ params.max_parallel or {wave.max_parallel} }}}}",
                    max_fail_percentage=wave.max_fail_percentage,
                    cohort_size=cohort_size,
                    respect_maintenance_windows=windowed["respect_maintenance_windows"],
                    expected_phase_seconds=windowed["expected_phase_seconds"],
                    doc_md=docs["precheck"],
                    **common,
                ),
                SnapshotOperator(task_id="snapshot", doc_md=docs["snapshot"], **common),
                VcenterUpgradeOperator(
                    task_id="upgrade_vcenter",
                    doc_md=_windowed_doc(docs, "upgrade_vcenter", wave),
                    **common,
                    **windowed,
                ),
                NsxUpgradeOperator(
                    task_id="upgrade_nsx",
                    doc_md=_windowed_doc(docs, "upgrade_nsx", wave),
                    **common,
                    **windowed,
                ),
                HostsUpgradeOperator(
                    task_id="upgrade_hosts",
                    doc_md=_windowed_doc(docs, "upgrade_hosts", wave),
                    **common,
                    **windowed,
                ),
                PostcheckOperator(
                    task_id="postcheck",
                    max_error_rate=wave.gate.max_error_rate,
                    max_p95_latency_ms=wave.gate.max_p95_latency_ms,
                    doc_md=docs["postcheck"],
                    **common,
                ),
            ]
            # every phase starts in the triggerer, the precheck too (it admits the SDDC first:
            # max_parallel, rce_lib.operators.admission); a worker runs one only when the trigger
            # cannot (and then names it in the grid: only a worker renders map_index_template)
            for phase in phases:
                _start_in_triggerer(phase, wave)
            rollback = RollbackOperator(
                task_id="rollback",
                trigger_rule=TriggerRule.ONE_FAILED,
                max_error_rate=wave.gate.max_error_rate,
                doc_md=docs["rollback"],
                **common,
            )
            for upstream, downstream in pairwise(phases):
                upstream >> downstream
            phases >> rollback

        canary = sddc_upgrade.override(group_id="canary").expand(sddc_id=canary_ids)
        gate = CanaryGateSensor(
            task_id="canary_gate",
            rollout=rollout,
            wave=name,
            target_version="{{ params.target_version }}",
            gate=wave.gate,
            max_fail_percentage=wave.max_fail_percentage,
            bake_seconds=wave.bake_seconds,
            trigger_rule=TriggerRule.ALL_DONE,
            doc_md=docs["canary_gate"],
        )
        canary_rollback = CanaryRollbackOperator.partial(
            task_id="canary_rollback",
            trigger_rule=TriggerRule.ONE_FAILED,
            pool=POOL_FOR_SERVICE[CanaryRollbackOperator.service],  # partial() skips __init__'s default
            max_error_rate=wave.gate.max_error_rate,
            retries=3,
            doc_md=docs["canary_rollback"],
            **phase_args,
        ).expand(sddc_id=canary_ids)
        bulk = sddc_upgrade.override(group_id="bulk").expand(sddc_id=bulk_ids)
        summary = WaveSummaryOperator(
            task_id="wave_summary",
            rollout=rollout,
            wave=name,
            max_fail_percentage=wave.max_fail_percentage,
            dry_run="{{ params.dry_run }}",
            trigger_rule=TriggerRule.ALL_DONE,
            outlets=[promoted_asset(name)],
            retries=0,
            doc_md=docs["wave_summary"],
        )
        canary >> gate >> canary_rollback >> summary
        # Also wait on each group's postcheck, not only on its rollback (the group's leaf): after a
        # clear that resumes a halted SDDC, its rollback stays skipped and would not hold the gate
        # or the summary back until the SDDC really ends.
        dag.get_task("canary.postcheck") >> gate
        dag.get_task("bulk.postcheck") >> summary
        if wave.approval is not None:
            approve = PromotionApprovalOperator(
                task_id="approve_promotion",
                rollout=rollout,
                wave=name,
                approval=wave.approval,
                retries=0,
                doc_md=docs["approve_promotion"],
            )
            gate >> approve >> bulk
        else:
            gate >> bulk
        bulk >> summary
    _drop_inherited_params(dag)
    return dag


def _drop_inherited_params(dag: DAG) -> None:
    """Leave the run's params on the DAG only.

    Airflow copies the DAG's params into every task, and the serialized DAG keeps each copy (a
    third of its size here). Tasks render `params` from the DAG's params merged with their own, so
    the copies add nothing; they only make the DAG the triggerer is sent for each task it starts
    bigger and slower to read.
    """
    inherited = dict(dag.params)
    for task in dag.tasks:
        if dict(task.params) == inherited:
            task.params = ParamsDict()


def build_all(plan: RolloutPlan, *, plan_path: str | None = None) -> dict[str, DAG]:
    return {wave.dag_id: build_wave_dag(plan, wave, plan_path=plan_path) for wave in plan.effective_waves()}
