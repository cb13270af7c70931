"""One DAG per wave of the rollout plan (include/rollout.yaml, or $RCE_ROLLOUT_PLAN).

A malformed plan raises one PlanError naming the file and field; Airflow shows
it as this file's import error and every other DAG file keeps working.
"""

from rce_lib.dag_factory import build_all
from rce_lib.plan.loader import default_plan_path, load_plan

_plan_path = default_plan_path()
globals().update(build_all(load_plan(_plan_path), plan_path=str(_plan_path)))
