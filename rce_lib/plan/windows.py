"""Maintenance-window arithmetic (no Airflow): when an SDDC's weekly window is open, and
whether a disruptive phase of a given expected duration may start now.

A window (`MaintenanceWindow` of the API contract) is weekly, in real UTC wall time:
it opens on `day_of_week` (0 = Monday) at `start_hour_utc`:00 and lasts
`duration_hours` (1..168). A window may run past Sunday midnight into the next week;
a 168 h window is open all the time (each occurrence ends exactly where the next one
opens, so it never closes).

`may_start` is the one rule the phases apply: start now only if the window is open
now AND the expected duration ends before it closes; otherwise wait for the next
opening where it fits (never sooner), or refuse when it can never fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from rce_lib.api.models import MaintenanceWindow
from rce_lib.errors import Reason

WEEK: Final = timedelta(days=7)
ALWAYS_OPEN_HOURS: Final = 168
DAY_NAMES: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

#: Percentile of the rollout's observed durations of a phase used as its expected duration...
EXPECTED_PERCENTILE: Final = 90
#: ...once at least this many successes of that phase were observed (else the plan's fallback).
MIN_SAMPLES: Final = 5

MissingWindowPolicy = Literal["proceed", "refuse"]


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def next_window(window: MaintenanceWindow, now: datetime) -> tuple[datetime, datetime]:
    """Start and end (UTC) of the window open at `now`, else of the next one to open.

    `start <= now < end` means the window is open now. The end is exclusive: at the
    very hour the window closes, the next week's occurrence is returned.
    """
    now = _utc(now)
    monday = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=now.weekday())
    start = monday + timedelta(days=window.day_of_week, hours=window.start_hour_utc)
    if start > now:  # this week's opening is still ahead: the last one was a week earlier
        start -= WEEK
    duration = timedelta(hours=window.duration_hours)
    if now < start + duration:  # the last opening's window is still open (also over Sunday night)
        return start, start + duration
    start += WEEK
    return start, start + duration


def describe(window: MaintenanceWindow) -> str:
    """`Sat 02:00 UTC, 6 h` - how logs and ledger events name a window."""
    return f"{DAY_NAMES[window.day_of_week]} {window.start_hour_utc:02d}:00 UTC, {window.duration_hours} h"


def is_open(window: MaintenanceWindow, now: datetime) -> bool:
    """True if the window is open at `now`."""
    start, _ = next_window(window, now)
    return start <= now.astimezone(UTC)


def describe_next(window: MaintenanceWindow, now: datetime) -> str:
    """`open now until Mon 06:00 UTC (in 3h 10m)` or `opens Sun 22:00 UTC (in 2d 4h), for 8h`."""
    start, end = next_window(window, now)
    if start <= now:
        return f"open now until {_stamp(end)} (in {human_delta(end - now)})"
    return f"opens {_stamp(start)} (in {human_delta(start - now)}), for {window.duration_hours}h"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%a %Y-%m-%d %H:%M UTC")


def human_delta(delta: timedelta) -> str:
    """A short duration: `2d 4h`, `3h 10m`, `5m 2s`, `0s` (seconds dropped above an hour)."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


# ---------------------------------------------------------------- may a phase start now?


@dataclass(frozen=True)
class StartNow:
    """The phase may start: the window is open and the expected duration fits before it closes
    (`closes_at` None: no restriction, no window or an always-open one)."""

    message: str
    closes_at: datetime | None = None


@dataclass(frozen=True)
class WaitUntil:
    """Wait (deferred) until `opens_at`, the next opening where the expected duration fits."""

    opens_at: datetime
    closes_at: datetime
    message: str


@dataclass(frozen=True)
class Refuse:
    """The phase can never start under this policy: fail with `reason` instead of waiting forever."""

    reason: Reason
    message: str


WindowDecision = StartNow | WaitUntil | Refuse


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _hours(duration: timedelta) -> str:
    return f"{duration.total_seconds() / 3600:.2f} h"


def may_start(
    window: MaintenanceWindow | None,
    now: datetime,
    expected: timedelta,
    *,
    missing: MissingWindowPolicy = "proceed",
) -> WindowDecision:
    """May a phase expected to take `expected` start at `now` within `window`?

    * no window (`null` in the API): `missing="proceed"` starts (no restriction),
      `"refuse"` refuses with NO_MAINTENANCE_WINDOW;
    * a 168 h window is always open: start;
    * `expected` longer than the window: refuse with MAINTENANCE_WINDOW_TOO_SHORT
      (waiting would never help);
    * open now with at least `expected` left: start;
    * open now with too little left: wait for next week's opening;
    * closed: wait for the next opening (the expected duration fits in every whole window).
    """
    now = _utc(now)
    if expected <= timedelta(0):
        raise ValueError(f"expected duration must be positive, got {expected}")
    if window is None:
        if missing == "refuse":
            return Refuse(
                Reason.NO_MAINTENANCE_WINDOW,
                "the SDDC has no maintenance window and the plan refuses SDDCs without one",
            )
        return StartNow("the SDDC has no maintenance window: no restriction")
    what = describe(window)
    if window.duration_hours >= ALWAYS_OPEN_HOURS:
        return StartNow(f"maintenance window {what} is always open")
    duration = timedelta(hours=window.duration_hours)
    if expected > duration:
        return Refuse(
            Reason.MAINTENANCE_WINDOW_TOO_SHORT,
            f"expected duration {_hours(expected)} never fits maintenance window {what}",
        )
    start, end = next_window(window, now)
    if start <= now and now + expected <= end:
        return StartNow(
            f"maintenance window {what} is open until {_fmt(end)}; "
            f"expected {_hours(expected)} fits (ends by {_fmt(now + expected)})",
            closes_at=end,
        )
    if start <= now:
        start, end = start + WEEK, end + WEEK
        why = f"open until {_fmt(end - WEEK)}, too little left for the expected {_hours(expected)}"
    else:
        why = "closed"
    return WaitUntil(
        opens_at=start,
        closes_at=end,
        message=f"maintenance window {what} is {why}: waiting until it opens at {_fmt(start)}",
    )


# ---------------------------------------------------------------- expected duration


@dataclass(frozen=True)
class ExpectedDuration:
    """How long a phase is expected to take, and where the number came from."""

    seconds: float
    source: Literal["observed", "fallback"]
    samples: int

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def describe(self) -> str:
        if self.source == "observed":
            return f"{self.seconds:.0f} s (p{EXPECTED_PERCENTILE} of {self.samples} observed)"
        return f"{self.seconds:.0f} s (plan fallback, {self.samples} observed)"


def expected_duration(
    observed: Sequence[float],
    fallback_s: float,
    *,
    percentile: int = EXPECTED_PERCENTILE,
    min_samples: int = MIN_SAMPLES,
) -> ExpectedDuration:
    """The `percentile` (nearest rank) of the observed durations once there are `min_samples`
    of them, else the plan's fallback. Non-positive observations are ignored."""
    samples = sorted(s for s in observed if s > 0)
    if len(samples) < min_samples:
        return ExpectedDuration(float(fallback_s), "fallback", len(samples))
    rank = max(1, math.ceil(percentile / 100 * len(samples)))
    return ExpectedDuration(samples[rank - 1], "observed", len(samples))
