"""Build the fleet sweep DAG `rce_reconcile` (parsing stays cheap: no network, no database).

Scheduled every 15 minutes by default; `RCE_RECONCILE_SCHEDULE` overrides it with
another cron expression, or `none` for triggered runs only.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TriggerRule

from rce_lib.api.services import POOL_FOR_SERVICE, Service
from rce_lib.operators.reconcile import (
    ListReconcileBatchesOperator,
    ReconcileBatchOperator,
    ReconcileSummaryOperator,
)

DAG_ID = "rce_reconcile"
DEFAULT_SCHEDULE = "*/15 * * * *"
SCHEDULE_ENV = "RCE_RECONCILE_SCHEDULE"
BATCH_SIZE_ENV = "RCE_RECONCILE_BATCH_SIZE"
START_DATE = datetime(2026, 1, 1)
MAX_ACTIVE_BATCHES = 4

DOC = """
### Reconciliation sweep

Walks the ledger's active and recent records (and every claim) in batches, compares each
SDDC's record with the SDDC the API reports, makes the **safe repairs** (adopt the real
state, release a stale claim, take an idle host out of maintenance, record the real state
of a task nobody watched) and lists **what needs a human** in `summary`'s log and return
value. Every finding is a ledger event `drift_detected` (`data.drift` = the drift kind).

`dry_run`: judge and report only; nothing is written to the ledger or sent to the API.
"""


def reconcile_schedule() -> str | None:
    """The sweep's cron: $RCE_RECONCILE_SCHEDULE ('none' or 'manual': triggered only), else every 15 min."""
    value = os.environ.get(SCHEDULE_ENV, "").strip()
    if not value:
        return DEFAULT_SCHEDULE
    return None if value.lower() in ("none", "manual") else value


def build_reconcile_dag(*, schedule: str | None = DEFAULT_SCHEDULE, batch_size: int | None = None) -> DAG:
    """The DAG `rce_reconcile`: list_batches -> reconcile_batch (mapped, pooled) -> summary."""
    size = batch_size or int(os.environ.get(BATCH_SIZE_ENV, "25"))
    with DAG(
        dag_id=DAG_ID,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        params={
            "dry_run": Param(
                False, type="boolean", title="Dry run", description="Find and report drift; repair nothing."
            )
        },
        tags=["rce", "reconcile"],
        doc_md=DOC,
        default_args={"owner": "rce", "retries": 1, "retry_delay": timedelta(seconds=30)},
    ) as dag:
        batches = ListReconcileBatchesOperator(task_id="list_batches", batch_size=size)
        sweep = ReconcileBatchOperator.partial(
            task_id="reconcile_batch",
            dry_run="{{ params.dry_run }}",
            pool=POOL_FOR_SERVICE[Service.VCENTER],  # .partial() does not run __init__'s default
            max_active_tis_per_dagrun=MAX_ACTIVE_BATCHES,
            map_index_template="{{ task.sddc_ids[0] if task.sddc_ids else '' }}",
        ).expand(sddc_ids=batches.output)
        summary = ReconcileSummaryOperator(
            task_id="summary", dry_run="{{ params.dry_run }}", trigger_rule=TriggerRule.ALL_DONE, retries=0
        )
        sweep >> summary
    return dag
