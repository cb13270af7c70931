"""Build one Airflow DAG per wave of the rollout plan.

Parsing must stay cheap (no network, no database): this module only reads the
plan file and declares tasks. Everything that talks to the fleet runs in tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from airflow.sdk import DAG, Asset, Param, TriggerRule, task_group

from rce_lib.api.models import SDDC_ID_PATTERN, VERSION_PATTERN
from rce_lib.api.services import POOL_FOR_SERVICE
from rce_lib.operators.admission import AdmitOperator
from rce_lib.operators.approval import PromotionApprovalOperator
from rce_lib.operators.cohort import CohortSliceOperator, ResolveCohortOperator
from rce_lib.operators.components import NsxUpgradeOperator, VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.operators.postcheck import PostcheckOperator
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.operators.rollback import CanaryRollbackOperator, RollbackOperator
from rce_lib.operators.snapshot import SnapshotOperator
from rce_lib.operators.summary import WaveSummaryOperator
from rce_lib.plan.model import RolloutPlan, Wave
from rce_lib.sensors.canary_gate import CanaryGateSensor

START_DATE = datetime(2026, 1, 1)
MAX_COHORT_IDS = 1000


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
            False, type="boolean", title="Dry run", description="Resolve and log the cohort; change nothing."
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


def _doc(plan: RolloutPlan, wave: Wave) -> str:
    approval = (
        f"then a human approves (timeout {wave.approval.timeout_seconds} s: {wave.approval.on_timeout}), "
        if wave.approval
        else ""
    )
    return f"""
### Wave `{wave.name}` of rollout `{plan.rollout}`

Upgrades the SDDCs selected by the plan to **{wave.release}** (or the `target_version` you give):
`resolve_cohort` picks them from the live inventory (skipping SDDCs already at the target,
on a blocked upgrade path, or claimed by another wave). Its first {wave.canary_size} SDDC(s) are the
**canary slice** (group `canary`); `canary_gate` bakes {wave.bake_seconds} s, then judges them on
failures, health, phase latency and a statistical comparison with SDDCs not yet upgraded;
{approval}only on PASS does the rest (group `bulk`) run. On FAIL, `canary_rollback` restores the
canary slice from its snapshots and nothing else is touched. Each SDDC runs precheck → snapshot →
upgrade_vcenter → upgrade_nsx → upgrade_hosts → postcheck; `rollback` restores it if a phase
failed for good. Once more than {wave.max_fail_percentage:g}% of the cohort failed, no new SDDC starts
(ERROR_BUDGET_EXHAUSTED). A run that ends within that budget emits `rce://waves/{wave.name}/promoted`.

**Resume:** clear the failed task (or the whole SDDC group) in the grid. Every phase first reads
the SDDC's real state, skips what is already done and re-attaches to work still running.

**Kill switch:** set the Variable `rce_kill_switch` (every wave) or `rce_kill_switch_{wave.name}`:
no new phase starts; delete it and clear the failed tasks to resume.

Size {wave.size}, canary {wave.canary_size}, max_parallel {wave.max_parallel},
max_fail_percentage {wave.max_fail_percentage}, schedule `{wave.schedule or "manual"}`.
"""


def build_wave_dag(plan: RolloutPlan, wave: Wave, *, plan_path: str | None = None) -> DAG:
    """The DAG `rce_wave_<name>` for one wave."""
    schedule: Any = None
    if wave.after:
        schedule = [promoted_asset(wave.after)]
    elif wave.cron:
        schedule = wave.cron
    rollout, name = plan.rollout, wave.name
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
        doc_md=_doc(plan, wave),
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
        )

        canary_slice = CohortSliceOperator(task_id="canary_slice", slice_name="canary")
        bulk_slice = CohortSliceOperator(task_id="bulk_slice", slice_name="bulk")
        cohort >> [canary_slice, bulk_slice]
        canary_ids, bulk_ids = canary_slice.output, bulk_slice.output

        cohort_size = "{{ ti.xcom_pull(task_ids='resolve_cohort') | length }}"

        @task_group(group_id="sddc")
        def sddc_upgrade(sddc_id: str) -> None:
            common = {**phase_args, "sddc_id": sddc_id}
            admit = AdmitOperator(
                task_id="admit",
                sddc_id=sddc_id,
                rollout=rollout,
                wave=name,
                max_parallel=f"{{{{ params.max_parallel or {wave.max_parallel} }}}}",
                max_fail_percentage=wave.max_fail_percentage,
                cohort_size=cohort_size,
                map_index_template="{{ task.sddc_id }}",
            )
            phases = [
                PrecheckOperator(
                    task_id="precheck",
                    max_fail_percentage=wave.max_fail_percentage,
                    cohort_size=cohort_size,
                    **common,
                ),
                SnapshotOperator(task_id="snapshot", **common),
                VcenterUpgradeOperator(task_id="upgrade_vcenter", **common),
                NsxUpgradeOperator(task_id="upgrade_nsx", **common),
                HostsUpgradeOperator(task_id="upgrade_hosts", **common),
                PostcheckOperator(
                    task_id="postcheck",
                    max_error_rate=wave.gate.max_error_rate,
                    max_p95_latency_ms=wave.gate.max_p95_latency_ms,
                    **common,
                ),
            ]
            rollback = RollbackOperator(
                task_id="rollback",
                trigger_rule=TriggerRule.ONE_FAILED,
                max_error_rate=wave.gate.max_error_rate,
                **common,
            )
            admit >> phases[0]
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
        )
        canary_rollback = CanaryRollbackOperator.partial(
            task_id="canary_rollback",
            trigger_rule=TriggerRule.ONE_FAILED,
            pool=POOL_FOR_SERVICE[CanaryRollbackOperator.service],  # partial() skips __init__'s default
            max_error_rate=wave.gate.max_error_rate,
            retries=3,
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
        )
        canary >> gate >> canary_rollback >> summary
        # Also wait on each group's postcheck, not only on its rollback (the group's leaf): after a
        # clear that resumes a halted SDDC, its rollback stays skipped and would not hold the gate
        # or the summary back until the SDDC really ends.
        dag.get_task("canary.postcheck") >> gate
        dag.get_task("bulk.postcheck") >> summary
        if wave.approval is not None:
            approve = PromotionApprovalOperator(
                task_id="approve_promotion", rollout=rollout, wave=name, approval=wave.approval, retries=0
            )
            gate >> approve >> bulk
        else:
            gate >> bulk
        bulk >> summary
    return dag


def build_all(plan: RolloutPlan, *, plan_path: str | None = None) -> dict[str, DAG]:
    return {wave.dag_id: build_wave_dag(plan, wave, plan_path=plan_path) for wave in plan.effective_waves()}
