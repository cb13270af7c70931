"""The AIMD arithmetic (no I/O): when a limit closes, how far it falls, how it climbs back."""

from __future__ import annotations

import pytest

from rce_lib.pacing.policy import LimitState, PacingPolicy, after_acceptance, after_refusal, load_policy

P = PacingPolicy(refusals=3, refused_share=0.5, window_s=30, cooldown_s=30, decrease=0.5, open_after_s=600)


def refuse(state: LimitState, n: int, *, at: float, in_flight: int) -> LimitState:
    for i in range(n):
        state = after_refusal(state, now=at + i * 0.1, in_flight=in_flight, policy=P)
    return state


def accept(state: LimitState, n: int, *, at: float, in_flight: int) -> LimitState:
    for i in range(n):
        state = after_acceptance(state, now=at + i * 0.1, in_flight=in_flight, policy=P)
    return state


def test_a_service_starts_open() -> None:
    assert LimitState().limit is None and LimitState().slots == float("inf")


def test_sustained_refusals_close_the_limit_to_half_of_what_is_in_flight() -> None:
    state = refuse(LimitState(), 3, at=100.0, in_flight=10)
    assert state.limit == 5.0 and state.slots == 5
    assert state.last_decrease == pytest.approx(100.2)


def test_fewer_refusals_than_the_threshold_leave_it_open() -> None:
    assert refuse(LimitState(), 2, at=100.0, in_flight=10).limit is None


def test_refusals_spread_over_more_than_the_window_are_not_sustained() -> None:
    state = LimitState()
    for t in (0.0, 31.0, 62.0, 93.0):
        state = after_refusal(state, now=t, in_flight=10, policy=P)
    assert state.limit is None


def test_a_few_refusals_among_many_accepted_starts_are_not_sustained() -> None:
    """A random 2% of 503s or a two-second 429 storm: under half of the window's starts."""
    state = accept(LimitState(), 10, at=100.0, in_flight=3)
    state = refuse(state, 4, at=102.0, in_flight=3)
    assert state.limit is None
    state = refuse(state, 7, at=103.0, in_flight=3)  # now 11 of 21 refused
    assert state.limit == 1.5


def test_one_burst_decreases_once_per_cooldown() -> None:
    state = refuse(LimitState(), 3, at=100.0, in_flight=10)
    state = refuse(state, 6, at=101.0, in_flight=10)
    assert state.limit == 5.0
    state = refuse(state, 3, at=131.0, in_flight=10)
    assert state.limit == 2.5


def test_the_limit_never_falls_below_the_minimum() -> None:
    state = LimitState()
    for k in range(10):
        state = refuse(state, 3, at=100.0 + 40 * k, in_flight=1)
    assert state.limit == P.min_limit


def test_a_decrease_starts_from_what_is_in_flight_when_that_is_below_the_limit() -> None:
    """The service lowered its capacity below our limit: what it runs of ours is the base."""
    state = LimitState(limit=8.0, last_refusal=0.0, last_decrease=0.0)
    assert refuse(state, 3, at=100.0, in_flight=4).limit == 2.0


def test_accepted_starts_raise_a_full_limit_by_about_one_per_limits_worth() -> None:
    state = refuse(LimitState(), 3, at=100.0, in_flight=8)
    assert state.limit == 4.0
    state = accept(state, 4, at=110.0, in_flight=4)
    assert 4.9 < (state.limit or 0) < 5.0
    state = accept(state, 5, at=111.0, in_flight=5)
    assert 5.8 < (state.limit or 0) < 6.0


def test_starts_accepted_below_the_limit_do_not_raise_it() -> None:
    """Application-limited: we did not use the room we had, so success says nothing more."""
    state = refuse(LimitState(), 3, at=100.0, in_flight=8)
    assert accept(state, 50, at=110.0, in_flight=2).limit == 4.0


def test_it_opens_again_after_a_quiet_spell() -> None:
    state = refuse(LimitState(), 3, at=100.0, in_flight=8)
    assert after_acceptance(state, now=100.3 + 599, in_flight=1, policy=P).limit == 4.0
    assert after_acceptance(state, now=100.3 + 600, in_flight=1, policy=P).limit is None


def test_the_policy_comes_from_the_environment() -> None:
    assert load_policy({}) == PacingPolicy()
    assert load_policy({"RCE_PACING": "off"}).enabled is False
    assert load_policy({"RCE_PACING": '{"refusals": 5, "decrease": 0.7}'}).refusals == 5


@pytest.mark.parametrize(
    "raw, message",
    [
        ("{not json", "must be JSON"),
        ("[1, 2]", "JSON object"),
        ('{"refusals": 0}', "refusals"),
        ('{"decrease": 1.5}', "decrease"),
        ('{"nonsense": 1}', "nonsense"),
    ],
)
def test_a_malformed_policy_is_an_error_not_a_default(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_policy({"RCE_PACING": raw})
