"""Maintenance-window arithmetic (rce_lib.plan.windows) and the plan's window settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rce_lib.api.models import MaintenanceWindow
from rce_lib.errors import PlanError, Reason
from rce_lib.plan.model import DEFAULT_EXPECTED_PHASE_SECONDS, parse_plan
from rce_lib.plan.windows import (
    Refuse,
    StartNow,
    WaitUntil,
    describe,
    describe_next,
    expected_duration,
    human_delta,
    is_open,
    may_start,
    next_window,
)

# 2026-11-25 is a Wednesday (day_of_week 2).
WED_10 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def window(day: int, hour: int, hours: int) -> MaintenanceWindow:
    return MaintenanceWindow(day_of_week=day, start_hour_utc=hour, duration_hours=hours)


def at(day: int, hour: int, minute: int = 0, week: int = 0) -> datetime:
    """Day `day` (0 = Monday) of the week of WED_10 (+ `week` weeks), at hour:minute UTC."""
    return datetime(2026, 11, 23, hour, minute, tzinfo=UTC) + timedelta(days=day + 7 * week)


# ------------------------------------------------------------------ next_window


def test_window_open_now_returns_the_current_occurrence() -> None:
    assert next_window(window(2, 8, 4), WED_10) == (at(2, 8), at(2, 12))


def test_window_opening_later_today() -> None:
    assert next_window(window(2, 14, 2), WED_10) == (at(2, 14), at(2, 16))


def test_window_earlier_this_week_returns_next_weeks() -> None:
    assert next_window(window(0, 1, 6), WED_10) == (at(0, 1, week=1), at(0, 7, week=1))


def test_window_end_is_exclusive() -> None:
    assert next_window(window(2, 6, 4), WED_10) == (at(2, 6, week=1), at(2, 10, week=1))
    assert next_window(window(2, 10, 4), WED_10) == (at(2, 10), at(2, 14))  # start is inclusive


def test_sunday_window_wraps_into_monday() -> None:
    sunday_22 = window(6, 22, 6)  # Sun 22:00 -> Mon 04:00
    monday_1am = at(0, 1, week=1)
    assert next_window(sunday_22, monday_1am) == (at(6, 22), at(0, 4, week=1))
    assert next_window(sunday_22, at(0, 4, week=1)) == (at(6, 22, week=1), at(0, 4, week=2))
    assert next_window(sunday_22, at(6, 21, 59)) == (at(6, 22), at(0, 4, week=1))


def test_168h_window_is_always_open() -> None:
    always = window(3, 5, 168)
    for now in (WED_10, at(3, 5), at(3, 4, 59), at(6, 23, 59)):
        start, end = next_window(always, now)
        assert start <= now < end and end - start == timedelta(hours=168)


def test_other_timezones_are_converted_and_naive_is_refused() -> None:
    cet = WED_10.astimezone(timezone(timedelta(hours=1)))
    assert next_window(window(2, 8, 4), cet) == (at(2, 8), at(2, 12))
    with pytest.raises(ValueError, match="naive"):
        next_window(window(2, 8, 4), datetime(2026, 11, 25, 10))


def test_describe_names_day_hour_and_length() -> None:
    assert describe(window(5, 2, 6)) == "Sat 02:00 UTC, 6 h"


# ------------------------------------------------------------------ may_start


def test_open_window_with_room_starts() -> None:
    decision = may_start(window(2, 8, 4), WED_10, 2 * H)
    assert isinstance(decision, StartNow) and decision.closes_at == at(2, 12)


def test_open_window_exactly_fitting_starts() -> None:
    assert isinstance(may_start(window(2, 8, 4), WED_10, 2 * H), StartNow)
    assert isinstance(may_start(window(2, 8, 4), WED_10, 2 * H + timedelta(seconds=1)), WaitUntil)


def test_closed_window_waits_for_the_opening_later_today() -> None:
    decision = may_start(window(2, 14, 4), WED_10, H)
    assert isinstance(decision, WaitUntil)
    assert (decision.opens_at, decision.closes_at) == (at(2, 14), at(2, 18))
    assert "opens at 2026-11-25T14:00Z" in decision.message


def test_phase_not_fitting_what_is_left_waits_for_next_week() -> None:
    decision = may_start(window(2, 8, 4), WED_10, 3 * H)  # 2 h left of 4
    assert isinstance(decision, WaitUntil)
    assert decision.opens_at == at(2, 8, week=1)
    assert "too little left" in decision.message


def test_wait_over_the_week_boundary() -> None:
    decision = may_start(window(6, 22, 6), at(0, 3, week=1), 2 * H)  # 1 h left on Monday morning
    assert isinstance(decision, WaitUntil) and decision.opens_at == at(6, 22, week=1)


def test_phase_longer_than_the_window_is_refused_not_waited_for() -> None:
    decision = may_start(window(2, 14, 4), WED_10, 5 * H)
    assert isinstance(decision, Refuse) and decision.reason is Reason.MAINTENANCE_WINDOW_TOO_SHORT
    assert "never fits" in decision.message


def test_168h_window_starts_any_phase() -> None:
    assert isinstance(may_start(window(2, 10, 168), at(2, 9, 59), 200 * H), StartNow)


def test_no_window_proceeds_or_refuses_by_policy() -> None:
    assert isinstance(may_start(None, WED_10, H), StartNow)
    refused = may_start(None, WED_10, H, missing="refuse")
    assert isinstance(refused, Refuse) and refused.reason is Reason.NO_MAINTENANCE_WINDOW


def test_expected_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        may_start(window(2, 8, 4), WED_10, timedelta(0))


# ------------------------------------------------------------------ expected duration


def test_expected_duration_falls_back_until_enough_history() -> None:
    assert expected_duration([], 3600).seconds == expected_duration([1, 2, 3, 4], 3600).seconds == 3600
    fallback = expected_duration([100, 200, 0], 3600)
    assert (fallback.seconds, fallback.source, fallback.samples) == (3600.0, "fallback", 2)


def test_expected_duration_is_the_p90_of_observed() -> None:
    observed = [float(s) for s in range(10, 110, 10)]  # 10..100
    got = expected_duration(observed, 3600)
    assert (got.seconds, got.source, got.samples) == (90.0, "observed", 10)
    assert expected_duration([5, 1, 3, 2, 4], 3600).seconds == 5  # nearest rank of 5 samples


# ------------------------------------------------------------------ plan settings


def test_window_settings_default_off_and_are_inherited(plan_data: dict[str, Any]) -> None:
    assert parse_plan(plan_data).wave("canary").respect_maintenance_windows is False
    plan_data["defaults"]["respect_maintenance_windows"] = True
    plan_data["defaults"]["expected_phase_seconds"] = {"upgrade_nsx": 1200}
    plan_data["waves"][2]["respect_maintenance_windows"] = False
    plan_data["waves"][2]["missing_maintenance_window"] = "refuse"
    canary, _, main = parse_plan(plan_data).effective_waves()
    assert canary.respect_maintenance_windows and not main.respect_maintenance_windows
    assert (canary.missing_maintenance_window, main.missing_maintenance_window) == ("proceed", "refuse")
    assert canary.expected_phase_seconds == {**DEFAULT_EXPECTED_PHASE_SECONDS, "upgrade_nsx": 1200}


def test_wave_expected_phase_seconds_replaces_the_default_whole(plan_data: dict[str, Any]) -> None:
    plan_data["defaults"]["expected_phase_seconds"] = {"upgrade_nsx": 1200}
    plan_data["waves"][0]["expected_phase_seconds"] = {"upgrade_hosts": 7200}
    canary = parse_plan(plan_data).wave("canary")
    assert canary.expected_phase_seconds == {**DEFAULT_EXPECTED_PHASE_SECONDS, "upgrade_hosts": 7200}


def test_bad_window_settings_are_refused_with_their_path(plan_data: dict[str, Any]) -> None:
    plan_data["defaults"]["respect_maintenance_windows"] = "yes"
    plan_data["waves"][0]["expected_phase_seconds"] = {"upgrade_hosts": 0}
    plan_data["waves"][1]["expected_phase_seconds"] = {"postcheck": 60}
    plan_data["waves"][2]["missing_maintenance_window"] = "skip"
    with pytest.raises(PlanError) as err:
        parse_plan(plan_data)
    text = str(err.value)
    assert "defaults.respect_maintenance_windows: Input should be a valid boolean" in text
    assert "waves[0].expected_phase_seconds (wave 'canary'): upgrade_hosts: must be 1..604800" in text
    assert "waves[1].expected_phase_seconds.postcheck.[key] (wave 'early')" in text
    assert "waves[2].missing_maintenance_window (wave 'main'): Input should be 'proceed' or 'refuse'" in text


# ---------------------------------------------------------------- next opening, as rce plan shows it


# 2026-03-02 is a Monday.
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)


def window_weekly(day: int, hour: int, hours: int) -> MaintenanceWindow:
    return MaintenanceWindow(day_of_week=day, start_hour_utc=hour, duration_hours=hours)


def at_weekly(days: int, hours: float = 0) -> datetime:
    return MONDAY + timedelta(days=days, hours=hours)


def test_next_opening_later_this_week() -> None:
    assert next_window(window_weekly(2, 10, 4), at_weekly(0, 9)) == (at_weekly(2, 10), at_weekly(2, 14))


def test_open_now_returns_the_current_window() -> None:
    start, end = next_window(window_weekly(2, 10, 4), at_weekly(2, 11.5))
    assert (start, end) == (at_weekly(2, 10), at_weekly(2, 14))
    assert is_open(window_weekly(2, 10, 4), at_weekly(2, 11.5))
    assert describe_next(window_weekly(2, 10, 4), at_weekly(2, 11.5)).startswith(
        "open now until Wed 2026-03-04 14:00 UTC"
    )


def test_start_is_inclusive_and_end_exclusive() -> None:
    assert next_window(window_weekly(2, 10, 4), at_weekly(2, 10)) == (at_weekly(2, 10), at_weekly(2, 14))
    assert next_window(window_weekly(2, 10, 4), at_weekly(2, 14)) == (at_weekly(9, 10), at_weekly(9, 14))


def test_window_already_over_this_week_opens_next_week() -> None:
    assert next_window(window_weekly(0, 1, 2), at_weekly(3)) == (at_weekly(7, 1), at_weekly(7, 3))
    assert not is_open(window_weekly(0, 1, 2), at_weekly(3))


def test_sunday_night_window_wraps_into_monday() -> None:
    sunday_22 = window_weekly(6, 22, 8)  # Sunday 22:00 -> Monday 06:00
    # Monday 03:00 is inside the window that opened the day before (last week's Sunday)
    assert next_window(sunday_22, at_weekly(0, 3)) == (at_weekly(-1, 22), at_weekly(0, 6))
    # Monday 06:00: that one is over; the next opens on Sunday
    assert next_window(sunday_22, at_weekly(0, 6)) == (at_weekly(6, 22), at_weekly(7, 6))
    # Sunday 23:00: open, until Monday 06:00 of next week
    assert next_window(sunday_22, at_weekly(6, 23)) == (at_weekly(6, 22), at_weekly(7, 6))


def test_week_long_window_is_always_open() -> None:
    always = window_weekly(3, 5, 168)
    for moment in (at_weekly(0), at_weekly(3, 4.99), at_weekly(3, 5), at_weekly(6, 23.5), at_weekly(10, 12)):
        start, end = next_window(always, moment)
        assert start <= moment < end
        assert end - start == timedelta(hours=168)


def test_now_in_another_timezone_is_converted_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    moment = datetime(2026, 3, 4, 12, 30, tzinfo=cet)  # 11:30 UTC, inside Wed 10:00-14:00 UTC
    assert next_window(window_weekly(2, 10, 4), moment) == (at_weekly(2, 10), at_weekly(2, 14))


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_window(window_weekly(2, 10, 4), datetime(2026, 3, 4, 12))


def test_describe_a_future_opening() -> None:
    text = describe_next(window_weekly(4, 20, 6), at_weekly(0, 9))
    assert text == "opens Fri 2026-03-06 20:00 UTC (in 4d 11h), for 6h"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (61, "1m 1s"), (3 * 3600 + 600, "3h 10m"), (90000, "1d 1h")]
)
def test_human_delta(seconds: int, text: str) -> None:
    assert human_delta(timedelta(seconds=seconds)) == text
