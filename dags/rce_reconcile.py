"""The reconciliation sweep, one Airflow DAG: `rce_reconcile`, every 15 minutes (or
$RCE_RECONCILE_SCHEDULE), triggerable with `dry_run`. Everything it does is in rce_lib.reconcile."""

from rce_lib.reconcile_dag import build_reconcile_dag, reconcile_schedule

rce_reconcile = build_reconcile_dag(schedule=reconcile_schedule())
