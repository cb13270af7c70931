"""Read one snapshot of the ledger for `rce status` (and the demo's summary)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rce_lib.ledger import Ledger, Progress
from rce_lib.status.snapshot import StatusSnapshot, wave_status

WAVE_EVENTS = ("cohort_resolved", "gate_decision")


def collect(
    ledger: Ledger,
    *,
    now: datetime,
    rollout: str | None = None,
    wave: str | None = None,
    run_id: str | None = None,
    plan_parallelism: Mapping[tuple[str, str], int] | None = None,
    shown_url: str | None = None,
) -> StatusSnapshot:
    """Every (rollout, wave) with progress rows matching the filters, with its ETA.

    `plan_parallelism` gives the plan's max_parallel per (rollout, wave), used when the run's own
    (recorded by resolve_cohort) is not in the ledger.
    """
    rows = ledger.list_progress(rollout=rollout, wave=wave, run_id=run_id)
    groups: dict[tuple[str, str], list[Progress]] = {}
    for row in rows:
        groups.setdefault((row.rollout, row.wave), []).append(row)
    durations_by_rollout: dict[str, dict[str, list[float]]] = {}
    waves = []
    for (group_rollout, group_wave), group_rows in sorted(groups.items()):
        if group_rollout not in durations_by_rollout:
            durations_by_rollout[group_rollout] = ledger.phase_durations(group_rollout)
        events = ledger.events(
            rollout=group_rollout, wave=group_wave, run_id=run_id, kinds=list(WAVE_EVENTS), limit=10_000
        )
        parallelism = (plan_parallelism or {}).get((group_rollout, group_wave))
        recorded = [e for e in events if e.kind == "cohort_resolved" and "max_parallel" in e.data]
        waves.append(
            wave_status(
                group_rollout,
                group_wave,
                group_rows,
                durations=durations_by_rollout[group_rollout],
                now=now,
                parallelism=None if recorded else parallelism,
                parallelism_source="the plan's max_parallel",
                events=events,
            )
        )
    return StatusSnapshot(ledger=shown_url or ledger.url, generated_at=now, waves=waves)
