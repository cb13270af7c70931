"""Gate decisions in the ledger: one wave-level `gate_decision` event per judgement."""

from __future__ import annotations

from typing import Final

from pydantic import ValidationError

from rce_lib.gate.evidence import GateDecision
from rce_lib.gate.stats import Verdict
from rce_lib.ledger import Ledger

DECISION_EVENT: Final = "gate_decision"
SAMPLE_EVENT: Final = "gate_sample"


def record(ledger: Ledger, rollout: str, decision: GateDecision) -> None:
    ledger.append_event(
        rollout,
        decision.wave,
        DECISION_EVENT,
        run_id=decision.run_id,
        message=decision.render(),
        data=decision.model_dump(mode="json"),
    )


def decisions(ledger: Ledger, rollout: str, wave: str, run_id: str) -> list[GateDecision]:
    """Every decision of one run, oldest first (rows that no longer parse are left out)."""
    out = []
    for event in ledger.events(rollout=rollout, wave=wave, run_id=run_id, kinds=[DECISION_EVENT]):
        try:
            out.append(GateDecision.model_validate(event.data))
        except ValidationError:
            continue
    return out


def final(ledger: Ledger, rollout: str, wave: str, run_id: str) -> GateDecision | None:
    """The run's last decision that is not a hold, or None if the gate has not decided."""
    for decision in reversed(decisions(ledger, rollout, wave, run_id)):
        if not decision.holding:
            return decision
    return None


def stops_the_wave(decision: GateDecision | None) -> bool:
    """A final FAIL, or an INCONCLUSIVE the plan fails closed on: the canary is rolled back."""
    return decision is not None and decision.decision is not Verdict.PASS and not decision.holding
