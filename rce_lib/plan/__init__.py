"""The rollout plan: its model, the YAML loader and cohort selection (no Airflow)."""

from rce_lib.plan.cohort import Cohort, CohortMember, Exclusion, ExclusionReason, select_cohort
from rce_lib.plan.loader import default_plan_path, load_plan
from rce_lib.plan.model import Gate, RolloutPlan, Selector, Wave, WaveDefaults, WaveSpec, parse_plan

__all__ = [
    "Cohort",
    "CohortMember",
    "Exclusion",
    "ExclusionReason",
    "Gate",
    "RolloutPlan",
    "Selector",
    "Wave",
    "WaveDefaults",
    "WaveSpec",
    "default_plan_path",
    "load_plan",
    "parse_plan",
    "select_cohort",
]
