"""Where an SDDC's wall-clock time goes, phase by phase, from the run's task instances.

The makespan says how long; this says where the waiting is: between a phase's end and the
next phase being scheduled (the scheduler), between scheduled and started (pool slots and the
executor), and the phase's own run (its downstream tasks, plus noticing that they ended).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rce_lib.ledger.models import Phase

#: the per-SDDC tasks of a wave's mapped group, in order (the precheck admits the SDDC first)
PHASES: tuple[str, ...] = tuple(p.value for p in Phase if p not in (Phase.ROLLBACK, Phase.DONE))
GROUPS = ("canary", "bulk")
SPANS = ("after_upstream", "scheduled_to_start", "start_to_end")


def _ts(value: Any) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "median": at(0.5), "p90": at(0.9), "max": round(ordered[-1], 2)}


def phase_breakdown(tis: Iterable[Mapping[str, Any]], t_trigger: float) -> dict[str, Any]:
    """Per phase, over every SDDC: seconds from the upstream phase's end to this one being
    scheduled, from scheduled to started, from started to ended; and when the first started
    and the last ended (seconds after the trigger). Task instances that never ran are left out."""
    by_key: dict[tuple[str, str, int], Mapping[str, Any]] = {}
    for ti in tis:
        group, _, task = str(ti.get("task_id", "")).partition(".")
        idx = int(ti.get("map_index", -1))
        if group in GROUPS and task in PHASES and idx >= 0:
            by_key[group, task, idx] = ti
    out: dict[str, Any] = {}
    for i, phase in enumerate(PHASES):
        spans: dict[str, list[float]] = {s: [] for s in SPANS}
        starts: list[float] = []
        ends: list[float] = []
        for (group, task, idx), ti in by_key.items():
            if task != phase:
                continue
            scheduled, start, end = (
                _ts(ti.get("scheduled_when")),
                _ts(ti.get("start_date")),
                _ts(ti.get("end_date")),
            )
            upstream = by_key.get((group, PHASES[i - 1], idx)) if i else None
            upstream_end = _ts(upstream.get("end_date")) if upstream else None
            if upstream_end is not None and scheduled is not None:
                spans["after_upstream"].append(max(0.0, scheduled - upstream_end))
            if scheduled is not None and start is not None:
                spans["scheduled_to_start"].append(max(0.0, start - scheduled))
            if start is not None and end is not None:
                spans["start_to_end"].append(max(0.0, end - start))
            if start is not None:
                starts.append(start - t_trigger)
            if end is not None:
                ends.append(end - t_trigger)
        if not starts:
            continue
        out[phase] = {
            **{s: _quantiles(v) for s, v in spans.items()},
            "first_start_s": round(min(starts), 1),
            "last_end_s": round(max(ends), 1) if ends else None,
        }
    return out


def render_rows(breakdown: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Table rows: per phase, median/p90 of each span, then first start and last end."""

    def q(value: Mapping[str, float] | None) -> str:
        return f"{value['median']:.1f}/{value['p90']:.1f}" if value else "-"

    rows = []
    for phase, b in breakdown.items():
        last = b.get("last_end_s")
        rows.append(
            (
                f"  {phase}",
                f"{q(b['after_upstream'])} | {q(b['scheduled_to_start'])} | {q(b['start_to_end'])}"
                f"  (first start {b['first_start_s']:.0f} s, last end "
                f"{'-' if last is None else f'{last:.0f} s'})",
            )
        )
    return rows
