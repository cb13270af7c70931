"""Each gate signal as a `Check`, and the checks folded into one `GateDecision`.

Every function here is pure: the sensor reads the ledger and the API, these
judge. A signal that cannot be read (a health body that breaks the contract, a
failed PromQL query) is never taken as healthy: it fails or is inconclusive.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from statistics import median
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rce_lib.gate.stats import Comparison, Verdict, compare
from rce_lib.plan.model import Gate, PromQLSignal

HISTORY_MIN_SAMPLES = 3


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Check(Frozen):
    """One signal's verdict, with the numbers behind it."""

    name: str
    verdict: Verdict
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)


class Reading(Frozen):
    """One health reading of one SDDC; `problem` when the response could not be trusted."""

    sddc_id: str
    error_rate: float | None = None
    p95_latency_ms: float | None = None
    status: str | None = None
    problem: str | None = None


class Member(Frozen):
    """Where one canary SDDC ended, from the ledger."""

    sddc_id: str
    status: str
    phase: str
    error_code: str | None = None

    @property
    def upgraded(self) -> bool:
        return self.status == "succeeded" and self.phase == "done"


class GateDecision(Frozen):
    """The gate's decision and all its evidence: what goes to the ledger, the log and the approver."""

    wave: str
    run_id: str
    decision: Verdict
    checks: list[Check]
    decided_at: datetime
    bake_ends_at: datetime | None = None
    holding: bool = False
    """INCONCLUSIVE, and the plan says hold: the gate samples again."""

    @property
    def reasons(self) -> list[str]:
        bad = [c for c in self.checks if c.verdict is self.decision and c.verdict is not Verdict.PASS]
        return [f"{c.name}: {c.detail}" for c in bad]

    def render(self) -> str:
        head = f"CANARY GATE {self.decision.value.upper()} - wave {self.wave}, run {self.run_id}"
        if self.holding:
            head += " (holding: sampling again)"
        lines = ["=" * len(head), head, "=" * len(head)]
        for check in self.checks:
            lines.append(f"[{check.verdict.value:^12}] {check.name}: {check.detail}")
        lines.append(f"decided at {self.decided_at.isoformat(timespec='seconds')}")
        return "\n".join(lines)


def decide(
    wave: str,
    run_id: str,
    checks: Sequence[Check],
    *,
    now: datetime,
    hold: bool,
    bake_ends_at: datetime | None,
) -> GateDecision:
    """Any FAIL fails; otherwise any INCONCLUSIVE is inconclusive; otherwise PASS."""
    verdicts = {c.verdict for c in checks}
    if Verdict.FAIL in verdicts:
        decision = Verdict.FAIL
    elif Verdict.INCONCLUSIVE in verdicts:
        decision = Verdict.INCONCLUSIVE
    else:
        decision = Verdict.PASS
    return GateDecision(
        wave=wave,
        run_id=run_id,
        decision=decision,
        checks=list(checks),
        decided_at=now,
        bake_ends_at=bake_ends_at,
        holding=hold and decision is Verdict.INCONCLUSIVE,
    )


# ------------------------------------------------------------------ the checks


def failure_rate(members: Sequence[Member], max_fail_percentage: float) -> Check:
    """The canary slice's share of SDDCs that did not reach the target, against the error budget."""
    total = len(members)
    failed = sorted(m.sddc_id for m in members if not m.upgraded)
    percent = 100.0 * len(failed) / total if total else 0.0
    verdict = Verdict.FAIL if percent > max_fail_percentage else Verdict.PASS
    codes = {m.sddc_id: m.error_code or f"{m.status}/{m.phase}" for m in members if not m.upgraded}
    detail = (
        f"{len(failed)} of {total} canary SDDC(s) failed ({percent:.0f}% vs budget {max_fail_percentage:g}%)"
    )
    if failed:
        detail += ": " + ", ".join(f"{i} [{codes[i]}]" for i in failed[:10])
    return Check(
        name="failure_rate",
        verdict=verdict,
        detail=detail,
        data={"failed": failed, "total": total, "percent": percent},
    )


def health(latest: Mapping[str, Reading], upgraded: Iterable[str], gate: Gate) -> Check:
    """Every upgraded canary SDDC, read after the bake, within the plan's thresholds."""
    problems: list[str] = []
    worst_error, worst_p95 = 0.0, 0.0
    ids = sorted(upgraded)
    for sddc_id in ids:
        reading = latest.get(sddc_id)
        if reading is None:
            problems.append(f"{sddc_id}: no health reading")
            continue
        if reading.problem is not None:
            problems.append(f"{sddc_id}: {reading.problem}")
            continue
        assert reading.error_rate is not None and reading.p95_latency_ms is not None
        worst_error, worst_p95 = max(worst_error, reading.error_rate), max(worst_p95, reading.p95_latency_ms)
        if reading.status == "UNHEALTHY":
            problems.append(f"{sddc_id}: status UNHEALTHY")
        if reading.error_rate > gate.max_error_rate:
            problems.append(f"{sddc_id}: error rate {reading.error_rate:.4f} > {gate.max_error_rate:g}")
        if reading.p95_latency_ms > gate.max_p95_latency_ms:
            problems.append(
                f"{sddc_id}: p95 latency {reading.p95_latency_ms:.0f} ms > {gate.max_p95_latency_ms:g} ms"
            )
    if not ids:
        return Check(
            name="health", verdict=Verdict.PASS, detail="no canary SDDC was upgraded: nothing to read"
        )
    if problems:
        return Check(
            name="health",
            verdict=Verdict.FAIL,
            detail="; ".join(problems[:10]),
            data={"problems": problems},
        )
    return Check(
        name="health",
        verdict=Verdict.PASS,
        detail=(
            f"{len(ids)} upgraded SDDC(s) healthy: worst error rate {worst_error:.4f} "
            f"(max {gate.max_error_rate:g}), worst p95 {worst_p95:.0f} ms (max {gate.max_p95_latency_ms:g})"
        ),
        data={"worst_error_rate": worst_error, "worst_p95_latency_ms": worst_p95},
    )


def phase_latency(
    canary: Mapping[str, Mapping[str, float]], history: Mapping[str, Sequence[float]], gate: Gate
) -> Check:
    """Canary phase durations against the plan's absolute bounds and `phase_latency_factor` times
    the rollout's median for that phase (only where the history holds enough samples)."""
    spikes: list[str] = []
    bounds: dict[str, float] = {}
    by_phase: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for sddc_id, phases in canary.items():
        for phase, seconds in phases.items():
            by_phase[phase].append((sddc_id, seconds))
    for phase, samples in sorted(by_phase.items()):
        limits: list[float] = []
        absolute = gate.max_phase_seconds.get(phase)  # type: ignore[call-overload]
        if absolute is not None:
            limits.append(float(absolute))
        past = history.get(phase, ())
        if len(past) >= HISTORY_MIN_SAMPLES:
            limits.append(gate.phase_latency_factor * float(median(past)))
        if not limits:
            continue
        bound = min(limits)
        bounds[phase] = bound
        spikes.extend(
            f"{sddc_id} {phase} took {seconds:.0f} s > bound {bound:.0f} s"
            for sddc_id, seconds in samples
            if seconds > bound
        )
    if spikes:
        return Check(
            name="phase_latency", verdict=Verdict.FAIL, detail="; ".join(spikes[:10]), data={"bounds": bounds}
        )
    if not bounds:
        detail = "no bound yet (no max_phase_seconds in the plan, too little history): not judged"
    else:
        detail = (
            "every canary phase within its bound ("
            + ", ".join(f"{p} {b:.0f} s" for p, b in sorted(bounds.items()))
            + ")"
        )
    return Check(name="phase_latency", verdict=Verdict.PASS, detail=detail, data={"bounds": bounds})


def baseline(canary: Sequence[Reading], base: Sequence[Reading], gate: Gate) -> list[Check]:
    """Error rate and p95 latency of the canary against not-yet-upgraded SDDCs, one test each
    at alpha/2 (Bonferroni over the two signals)."""
    good_c = [r for r in canary if r.problem is None]
    good_b = [r for r in base if r.problem is None]
    alpha = gate.alpha / 2
    checks = []
    for signal, attr in (("error_rate", "error_rate"), ("p95_latency_ms", "p95_latency_ms")):
        comparison: Comparison = compare(
            signal,
            [float(getattr(r, attr)) for r in good_c],
            [float(getattr(r, attr)) for r in good_b],
            min_samples=gate.min_samples,
            alpha=alpha,
            min_effect=gate.min_effect,
        )
        checks.append(
            Check(
                name=f"baseline_{signal}",
                verdict=comparison.verdict,
                detail=comparison.detail,
                data=comparison.model_dump(mode="json"),
            )
        )
    return checks


def prometheus(signal: PromQLSignal, values: Sequence[float] | None, error: str | None) -> Check:
    """A PromQL instant query: every returned sample at or below max_value. No answer is no evidence."""
    if error is not None or values is None:
        return Check(
            name="prometheus",
            verdict=Verdict.INCONCLUSIVE,
            detail=f"query failed: {error or 'no result'}",
            data={"query": signal.query},
        )
    if not values:
        return Check(
            name="prometheus",
            verdict=Verdict.INCONCLUSIVE,
            detail="query returned no samples",
            data={"query": signal.query},
        )
    worst = max(values)
    verdict = Verdict.FAIL if worst > signal.max_value else Verdict.PASS
    return Check(
        name="prometheus",
        verdict=verdict,
        detail=f"max {worst:.4g} over {len(values)} sample(s) (limit {signal.max_value:g})",
        data={"query": signal.query, "values": list(values)[:50]},
    )
