"""Poll spacing: the number of polls grows with the log of the task's duration, within bounds."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from rce_lib.triggers.backoff import GROWTH, next_poll_delay, poll_delay, polls_bound


def polls_for(duration: float, *, minimum: float = 1.0, maximum: float = math.inf) -> int:
    """How many GETs the trigger makes for a task that ends after `duration` seconds."""
    elapsed, polls = 0.0, 0
    while True:
        polls += 1
        if elapsed >= duration:
            return polls
        elapsed += next_poll_delay(elapsed, minimum=minimum, maximum=maximum)


def test_poll_count_grows_with_the_log_of_duration() -> None:
    short, long = polls_for(60), polls_for(3600)
    # 60x longer task: the geometric series (x1.25 per poll) adds ~log(60)/log(1.25) ~ 18 polls
    assert long - short == pytest.approx(math.log(60) / math.log(1.25), abs=2)
    assert long < 3 * short
    # an hour-long task costs a few dozen polls, not one per second
    assert 30 <= long <= 45


def test_poll_count_is_linear_once_the_cap_is_reached() -> None:
    # with a 30 s cap an hour costs about 3600/30 more polls than the uncapped series would
    capped = polls_for(3600, maximum=30)
    assert capped > polls_for(3600)
    assert capped == pytest.approx(3600 / 30, rel=0.25)


@pytest.mark.parametrize("elapsed", [0.0, 0.5, 3.9, 10.0, 100.0, 1e6])
def test_delay_stays_within_bounds(elapsed: float) -> None:
    delay = next_poll_delay(elapsed, minimum=1.0, maximum=30.0)
    assert 1.0 <= delay <= 30.0
    assert delay == max(1.0, min(30.0, elapsed * 0.25))


def test_a_task_that_ends_is_noticed_within_a_quarter_of_its_age() -> None:
    for elapsed in (8.0, 40.0, 100.0):
        assert next_poll_delay(elapsed, minimum=1.0, maximum=1e9) <= 0.25 * elapsed


# ---------------------------------------------------------------- poll_delay (what the engine uses)


def schedule(
    duration: float,
    *,
    minimum: float = 1.0,
    progress: Callable[[float], int | None] = lambda age: None,
    retry_after: float | None = None,
) -> list[float]:
    """The ages at which the engine polls a task that ends after `duration` seconds (the last
    poll sees it terminal); `progress(age)` is what the task reports at that age."""
    ages, age = [], 0.0
    while True:
        age += poll_delay(
            age, minimum=minimum, progress=progress(age) if age else None, retry_after=retry_after
        )
        ages.append(age)
        if age >= duration:
            return ages


DURATIONS = [0.5, 1, 2, 5, 30, 60, 180, 600, 1200, 2700, 3600, 4 * 3600, 12 * 3600, 7 * 86400]


def linear(duration: float) -> Callable[[float], int | None]:
    return lambda age: min(99, int(100 * age / duration))


def liar(age: float) -> int | None:
    return 99  # "almost done" forever: the worst estimate


def laggard(age: float) -> int | None:
    return 1  # "barely started" forever


@pytest.mark.parametrize("minimum", [0.5, 1.0, 15.0])
@pytest.mark.parametrize("duration", DURATIONS)
@pytest.mark.parametrize(
    "progress", [None, "linear", liar, laggard], ids=["none", "linear", "liar", "laggard"]
)
def test_polls_are_at_most_a_plus_b_log2_of_the_duration(
    duration: float, minimum: float, progress: Any
) -> None:
    """polls(D) <= 2 + 1/g + log(D g / min) / log(1 + g); with g = 1/2: 4 + 1.71 log2(D / 2 min),
    whatever the task reports about its progress."""
    report = linear(duration) if progress == "linear" else progress or (lambda age: None)
    polls = len(schedule(duration, minimum=minimum, progress=report))
    bound = polls_bound(duration, minimum=minimum)
    assert polls <= bound
    knee = minimum / GROWTH
    assert bound == pytest.approx(4 + max(0.0, math.log2(max(duration, knee) / knee)) / math.log2(1.5))


def test_an_hour_costs_a_few_polls_and_a_week_only_a_few_more() -> None:
    hour, week = len(schedule(3600, minimum=15)), len(schedule(7 * 86400, minimum=15))
    assert hour <= 14
    assert week - hour <= math.ceil(math.log(168) / math.log(1.5)) + 1  # 168x longer: + log_1.5(168)
    # with an honest progress the task is polled near its end: a handful, whatever its length
    for duration in (180, 1200, 2700, 3600, 4 * 3600):
        assert len(schedule(duration, minimum=15, progress=linear(duration))) <= 6


def test_a_finished_task_is_noticed_within_a_bounded_share_of_its_age() -> None:
    for duration in DURATIONS:
        for report in (None, linear(duration), liar, laggard):
            ages = schedule(duration, minimum=1.0, progress=report or (lambda age: None))
            late = ages[-1] - duration
            assert late <= max(1.0, 4.0 * (ages[-2] if len(ages) > 1 else 0.0))  # max_growth x age
            if report is None:
                assert late <= max(1.0, GROWTH * ages[-2] if len(ages) > 1 else 1.0)


def test_retry_after_is_always_honoured() -> None:
    for age in (0.0, 1.0, 100.0, 10_000.0):
        for progress in (None, 1, 50, 99):
            assert poll_delay(age, minimum=1.0, progress=progress, retry_after=120.0) >= 120.0


def test_a_fixed_cap_is_honoured_and_makes_the_count_linear() -> None:
    assert poll_delay(10_000.0, minimum=1.0, maximum=30.0) == 30.0
    assert poll_delay(0.0, minimum=1.0, maximum=30.0) == 1.0
