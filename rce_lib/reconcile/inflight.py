"""In flight: a phase reconciles its SDDC before acting (no Airflow here).

The phase operators call `reconcile_before_phase` first thing; the rules are the
fleet sweep's, with the phase as the watcher (so the engine's own progress is not
drift). Safe repairs are made on the spot; the decision says whether the phase
proceeds as usual, proceeds after adopting the real state (it then skips what is
already done), or stops for a human.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rce_lib.api.models import Release, Sddc
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase
from rce_lib.reconcile.apply import Reconciler
from rce_lib.reconcile.rules import PhaseAction, PhaseDecision

if TYPE_CHECKING:
    from rce_lib.hooks.sddc_api import SddcApiHook

__all__ = ["PhaseAction", "PhaseDecision", "reconcile_before_phase"]


def reconcile_before_phase(
    ledger: Ledger,
    hook: SddcApiHook,
    *,
    rollout: str,
    wave: str,
    sddc_id: str,
    phase: Phase | str,
    run_id: str,
    target_version: str,
    target: Release | None = None,
    source: Release | None = None,
    sddc: Sddc | None = None,
) -> PhaseDecision:
    """Reconcile one SDDC before `phase` acts on it.

    Costs one GET of the SDDC (none when the caller passes the `sddc` it just read, with
    nothing written since; the decision's `sddc` is the read the phase may act on), the
    releases not given (pass `target` and `source` when the caller has them), and one GET
    per task the ledger still holds as running. API errors other
    than 404 and contract violations propagate: the phase handles them as it handles
    any failed read. Every finding is recorded as a ledger event `drift_detected`
    (data.drift = the kind's name, data.by = `phase:<phase>`).
    """
    phase = Phase(phase)
    reconciler = Reconciler(ledger, hook, by=f"phase:{phase.value}", run_id=run_id)
    return reconciler.before_phase(
        rollout=rollout,
        wave=wave,
        sddc_id=sddc_id,
        phase=phase,
        target_version=target_version,
        target=target,
        source=source,
        sddc=sddc,
    )
