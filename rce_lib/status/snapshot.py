"""Where a wave stands, from the ledger: SDDCs per phase and status, failures, and an ETA (no Airflow).

**ETA.** Each phase's expected duration is the median of the rollout's recent
`phase_succeeded` durations (`Ledger.phase_durations`; phases that found their work already
done took no time and are not counted). An SDDC that is not finished still has to run its
current phase (unless that phase already succeeded) and every phase after it; its remaining
time is the sum of those medians, less the time its record has been in the current phase if
it is running (never below 0). The wave runs at most `parallelism` SDDCs at a time and each
SDDC runs its phases one after the other, so it cannot end before its slowest SDDC, nor before
the total remaining work spread over `parallelism` slots:

    eta = max(max(remaining), sum(remaining) / parallelism)

It ignores the canary gate's bake, approvals, pools shared with other waves and retries, and is
unknown until every phase still ahead has at least one observed duration.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from rce_lib.ledger.models import Event, Phase, Progress, Status

UPGRADE_PHASES: tuple[Phase, ...] = (
    Phase.PRECHECK,
    Phase.SNAPSHOT,
    Phase.UPGRADE_VCENTER,
    Phase.UPGRADE_NSX,
    Phase.UPGRADE_HOSTS,
    Phase.POSTCHECK,
)
ROW_ORDER: tuple[Phase, ...] = (*UPGRADE_PHASES, Phase.ROLLBACK, Phase.DONE)
STATUS_ORDER: tuple[Status, ...] = tuple(Status)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SddcState(_Frozen):
    """One SDDC of the wave as the ledger has it."""

    sddc_id: str
    run_id: str
    phase: Phase
    status: Status
    canary: bool = False
    attempts: int
    source_version: str | None = None
    target_version: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    finished: bool
    remaining_s: float | None = None
    grid: str | None = None
    """Where the SDDC's tasks sit in its run's grid, `<group>[<map index>]` (grid_slots)."""


class WaveStatus(_Frozen):
    """One (rollout, wave): counts, failures, SDDCs and the ETA."""

    rollout: str
    wave: str
    run_ids: list[str]
    total: int
    by_status: dict[str, int]
    by_phase: dict[str, dict[str, int]]
    finished: int
    failures: list[SddcState]
    sddcs: list[SddcState]
    parallelism: int
    parallelism_source: str
    medians_s: dict[str, float]
    eta_s: float | None = None
    eta_note: str = ""
    gate: str | None = None
    excluded: dict[str, int] | None = None

    @property
    def done(self) -> bool:
        """Every SDDC finished (nothing pending, running, or failed and waiting for a retry)."""
        return self.finished == self.total


class StatusSnapshot(_Frozen):
    """Every wave asked for, at one moment."""

    ledger: str
    generated_at: datetime
    waves: list[WaveStatus]

    @property
    def done(self) -> bool:
        return all(wave.done for wave in self.waves)


# ---------------------------------------------------------------- pure pieces


def is_finished(row: Progress) -> bool:
    """Nothing more will happen to it: done, rolled back, skipped, or failed for good."""
    if row.status in (Status.ROLLED_BACK, Status.SKIPPED):
        return True
    if row.status is Status.SUCCEEDED and row.phase is Phase.DONE:
        return True
    return row.status is Status.FAILED and row.finished_at is not None


def phase_medians(durations: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Median seconds per phase, for the phases with at least one observation."""
    return {phase: float(statistics.median(values)) for phase, values in durations.items() if values}


def remaining_phases(row: Progress) -> list[Phase]:
    """The phases this SDDC still has to run, in order (empty when finished)."""
    if is_finished(row):
        return []
    if row.phase is Phase.ROLLBACK:
        return [Phase.ROLLBACK]
    if row.phase is Phase.DONE:
        return []
    index = UPGRADE_PHASES.index(row.phase)
    if row.status is Status.SUCCEEDED:
        index += 1
    return list(UPGRADE_PHASES[index:])


def remaining_seconds(row: Progress, medians: Mapping[str, float], now: datetime) -> float | None:
    """Expected seconds until this SDDC finishes; None when a phase ahead has no median yet."""
    phases = remaining_phases(row)
    if any(phase.value not in medians for phase in phases):
        return None
    total = sum(medians[phase.value] for phase in phases)
    if row.status is Status.RUNNING and phases:
        elapsed = max(0.0, (now - row.updated_at).total_seconds())
        total -= min(elapsed, medians[phases[0].value])
    return max(0.0, total)


def wave_eta(remaining: Sequence[float], parallelism: int) -> float:
    """The wave's expected time to finish: its slowest SDDC, or its work spread over the slots."""
    if not remaining:
        return 0.0
    return max(max(remaining), sum(remaining) / max(1, parallelism))


def missing_medians(rows: Sequence[Progress], medians: Mapping[str, float]) -> list[str]:
    """Phases still ahead of some SDDC that have no observed duration yet, in phase order."""
    wanted = {phase for row in rows for phase in remaining_phases(row)}
    return [
        phase.value
        for phase in (*UPGRADE_PHASES, Phase.ROLLBACK)
        if phase in wanted and phase.value not in medians
    ]


def wave_status(
    rollout: str,
    wave: str,
    rows: Sequence[Progress],
    *,
    durations: Mapping[str, Sequence[float]],
    now: datetime,
    parallelism: int | None = None,
    parallelism_source: str = "",
    events: Sequence[Event] = (),
) -> WaveStatus:
    """Fold one wave's progress rows (and its cohort and gate events) into a WaveStatus.

    `parallelism` is the run's max_parallel when known (the cohort_resolved event, else the plan);
    without it the SDDCs in flight now are taken as the parallelism (at least 1).
    """
    medians = phase_medians(durations)
    cohort = _last(events, "cohort_resolved")
    canary = set(cohort.data.get("canary") or []) if cohort else set()
    if parallelism is None and cohort is not None and isinstance(cohort.data.get("max_parallel"), int):
        parallelism, parallelism_source = int(cohort.data["max_parallel"]), "the run's max_parallel"
    if parallelism is None:
        in_flight = sum(1 for row in rows if row.status is Status.RUNNING)
        parallelism, parallelism_source = max(1, in_flight), "SDDCs running now"
    slots = grid_slots(cohort)
    states = [
        _state(
            row,
            medians,
            now,
            row.sddc_id in canary,
            slots.get(row.sddc_id) if cohort and row.run_id == cohort.run_id else None,
        )
        for row in rows
    ]
    by_phase: dict[str, dict[str, int]] = {}
    for row in rows:
        cell = by_phase.setdefault(row.phase.value, {})
        cell[row.status.value] = cell.get(row.status.value, 0) + 1
    open_rows = [row for row in rows if not is_finished(row)]
    missing = missing_medians(open_rows, medians)
    remaining = [s.remaining_s for s in states if not s.finished]
    eta: float | None = None
    if missing:
        note = "unknown: no observed duration yet for " + ", ".join(missing)
    else:
        eta = wave_eta([r for r in remaining if r is not None], parallelism)
        note = f"{len(open_rows)} SDDC(s) to go, at most {parallelism} at a time ({parallelism_source})"
    gate = _last(events, "gate_decision")
    return WaveStatus(
        rollout=rollout,
        wave=wave,
        run_ids=sorted({row.run_id for row in rows}),
        total=len(rows),
        by_status={status.value: count for status, count in Counter(row.status for row in rows).items()},
        by_phase=by_phase,
        finished=len(rows) - len(open_rows),
        failures=[s for s in states if s.error_code or s.status in (Status.FAILED, Status.ROLLED_BACK)],
        sddcs=sorted(states, key=lambda s: (not s.canary, s.sddc_id)),
        parallelism=parallelism,
        parallelism_source=parallelism_source,
        medians_s=medians,
        eta_s=eta,
        eta_note=note,
        gate=(gate.message.strip().splitlines() or [""])[0] if gate else None,
        excluded=_excluded(cohort),
    )


def grid_slots(cohort: Event | None) -> dict[str, str]:
    """Where each SDDC of a run sits in the run's grid: `canary[i]` or `bulk[i]`, i its map index.

    The phases start in the triggerer, which cannot render `map_index_template` (Airflow 3.3),
    so the grid shows most of an SDDC's tasks by map index; this says which index is which. The
    groups are mapped over the slices resolve_cohort pushed: the canary slice is the cohort's
    canary ids it claimed, the bulk slice the rest of its members, in order."""
    if cohort is None:
        return {}
    members = [str(m) for m in cohort.data.get("members") or []]
    claimed = set(members)
    canary = [str(c) for c in cohort.data.get("canary") or [] if c in claimed]
    in_canary = set(canary)
    bulk = [m for m in members if m not in in_canary]
    return {
        **{sddc_id: f"canary[{i}]" for i, sddc_id in enumerate(canary)},
        **{sddc_id: f"bulk[{i}]" for i, sddc_id in enumerate(bulk)},
    }


def _state(
    row: Progress, medians: Mapping[str, float], now: datetime, canary: bool, grid: str | None = None
) -> SddcState:
    finished = is_finished(row)
    return SddcState(
        sddc_id=row.sddc_id,
        run_id=row.run_id,
        phase=row.phase,
        status=row.status,
        canary=canary,
        attempts=row.attempts,
        source_version=row.source_version,
        target_version=row.target_version,
        error_code=row.last_error.code if row.last_error else None,
        error_message=row.last_error.message if row.last_error else None,
        finished=finished,
        remaining_s=None if finished else remaining_seconds(row, medians, now),
        grid=grid,
    )


def _last(events: Sequence[Event], kind: str) -> Event | None:
    matching = [event for event in events if event.kind == kind]
    return matching[-1] if matching else None


def _excluded(cohort: Event | None) -> dict[str, int] | None:
    if cohort is None:
        return None
    items = cohort.data.get("excluded") or []
    return dict(Counter(str(item.get("reason")) for item in items if isinstance(item, dict)))
