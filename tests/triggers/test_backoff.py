"""Poll spacing: the number of polls grows with the log of the task's duration, within bounds."""

from __future__ import annotations

import math

import pytest

from rce_lib.triggers.backoff import next_poll_delay


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
