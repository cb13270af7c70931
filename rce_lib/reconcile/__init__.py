"""Reconciliation: find and repair drift between the ledger and the real fleet.

`drift` names the drift kinds and repairs, `rules` decides (pure), `apply` carries the
decisions out (hook + ledger), `inflight.reconcile_before_phase` is the phases' entry
point. No module here imports Airflow.
"""

from rce_lib.reconcile.drift import DriftKind, Finding, RepairKind, RunState
from rce_lib.reconcile.rules import PhaseAction, PhaseDecision, decide, find_drift

__all__ = [
    "DriftKind",
    "Finding",
    "PhaseAction",
    "PhaseDecision",
    "RepairKind",
    "RunState",
    "decide",
    "find_drift",
]
