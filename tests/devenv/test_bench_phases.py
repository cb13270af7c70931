"""The bench's per-phase breakdown of where an SDDC's time goes, from REST task instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rce_lib.devenv.bench_phases import PHASES, phase_breakdown, render_rows

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _at(seconds: float | None) -> str | None:
    return None if seconds is None else (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _ti(
    task: str, idx: int, scheduled: float | None, start: float | None, end: float | None
) -> dict[str, Any]:
    return {
        "task_id": task,
        "map_index": idx,
        "scheduled_when": _at(scheduled),
        "start_date": _at(start),
        "end_date": _at(end),
    }


def _chain(group: str, idx: int, t: float, *, gap: float, wait: float, run: float) -> list[dict[str, Any]]:
    """One SDDC's phases back to back: each scheduled `gap` after its upstream's end, started
    `wait` later, running `run`."""
    out = []
    for phase in PHASES:
        scheduled = t + gap
        out.append(_ti(f"{group}.{phase}", idx, scheduled, scheduled + wait, scheduled + wait + run))
        t = scheduled + wait + run
    return out


def test_spans_per_phase_over_both_groups() -> None:
    tis = _chain("canary", 0, 0.0, gap=1.0, wait=2.0, run=10.0) + _chain(
        "bulk", 0, 100.0, gap=3.0, wait=4.0, run=20.0
    )
    tis += [_ti("resolve_cohort", -1, 0, 0, 1), _ti("bulk.rollback", 0, None, None, None)]
    b = phase_breakdown(tis, t_trigger=T0.timestamp())

    assert list(b) == list(PHASES)
    assert b["precheck"]["after_upstream"] is None  # nothing upstream inside the group
    for phase in PHASES[1:]:
        assert b[phase]["after_upstream"] == {"n": 2, "median": 3.0, "p90": 3.0, "max": 3.0}
    assert b["precheck"]["scheduled_to_start"]["max"] == 4.0
    assert b["upgrade_nsx"]["start_to_end"] == {"n": 2, "median": 20.0, "p90": 20.0, "max": 20.0}
    assert b["precheck"]["first_start_s"] == 3.0  # canary: scheduled at 1, started 2 s later
    assert b["postcheck"]["last_end_s"] == 100.0 + 6 * 27.0


def test_instances_that_never_ran_are_left_out() -> None:
    tis = [
        _ti("bulk.precheck", 0, 0.0, 1.0, 2.0),
        _ti("bulk.snapshot", 0, 5.0, None, None),  # scheduled, never started
        _ti("bulk.upgrade_hosts", 0, None, None, None),
    ]
    b = phase_breakdown(tis, t_trigger=T0.timestamp())
    assert list(b) == ["precheck"]
    rows = dict(render_rows(b))
    assert rows["  precheck"].startswith("- | 1.0/1.0 | 1.0/1.0")


def test_a_running_phase_has_no_last_end() -> None:
    b = phase_breakdown([_ti("bulk.upgrade_hosts", 3, 0.0, 2.0, None)], t_trigger=T0.timestamp())
    assert b["upgrade_hosts"]["last_end_s"] is None
    assert "last end -" in dict(render_rows(b))["  upgrade_hosts"]
