from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from _fake_clock import FakeClock

from rce_lib.errors import ApiError, ContractViolation, Reason, ThrottledError
from rce_lib.hooks.retry import (
    MUTATIONS,
    POLLS,
    READS,
    RetryPolicy,
    async_retrying,
    is_retryable,
    parse_retry_after,
    retrying,
)

POLICY = RetryPolicy("test", attempts=6, deadline_s=1000.0, base_s=0.5, cap_s=4.0, throttle_jitter_s=0.25)


class MaxRng(random.Random):
    """uniform() returns its upper bound: shows the ceiling each wait is drawn under."""

    def uniform(self, a: float, b: float) -> float:
        return b


def failing(*errors: BaseException, result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []
    queue = list(errors)

    def fn() -> str:
        calls.append(1)
        if queue:
            raise queue.pop(0)
        return result

    return fn, calls


def server_error(status: int = 500) -> ApiError:
    return ApiError(f"HTTP {status}", status=status, retryable=True)


def throttled(retry_after: float | None, status: int = 503) -> ThrottledError:
    return ThrottledError(
        "busy", status=status, code="SERVICE_AT_CAPACITY", retryable=True, retry_after=retry_after
    )


def test_named_policies_are_bounded_by_attempts_and_deadline() -> None:
    for policy in (READS, MUTATIONS, POLLS):
        assert 1 < policy.attempts <= 10
        assert 0 < policy.deadline_s <= 600
        assert policy.base_s <= policy.cap_s


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy("bad", attempts=0, deadline_s=1, base_s=1, cap_s=1)


def test_retry_after_seconds_is_waited_at_least(clock: FakeClock) -> None:
    fn, calls = failing(throttled(7), throttled(3, status=429))
    assert retrying(POLICY, sleep=clock.sleep, clock=clock)(fn) == "ok"
    assert len(calls) == 3
    assert 7 <= clock.sleeps[0] <= 7 + POLICY.throttle_jitter_s
    assert 3 <= clock.sleeps[1] <= 3 + POLICY.throttle_jitter_s


def test_retry_after_is_never_shortened_by_jitter(clock: FakeClock) -> None:
    for seed in range(50):
        clock.sleeps.clear()
        fn, _ = failing(throttled(2))
        retrying(POLICY, sleep=clock.sleep, clock=clock, rng=random.Random(seed))(fn)
        assert clock.sleeps[0] >= 2


def test_retry_after_http_date_is_honoured(clock: FakeClock) -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    fn, _ = failing(throttled(parse_retry_after(header, now=now)))
    retrying(POLICY, sleep=clock.sleep, clock=clock)(fn)
    assert 30 <= clock.sleeps[0] <= 30 + POLICY.throttle_jitter_s


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("Thu, 01 Jan 2026 12:00:10 GMT", 10.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # in the past: no wait, never negative
        ("soon", None),
        ("-3", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)) == expected


def test_full_jitter_ceiling_grows_exponentially_up_to_the_cap(clock: FakeClock) -> None:
    fn, calls = failing(*(server_error() for _ in range(5)))
    retrying(POLICY, sleep=clock.sleep, clock=clock, rng=MaxRng())(fn)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert len(calls) == 6


def test_full_jitter_draws_between_zero_and_the_ceiling(clock: FakeClock) -> None:
    seen: list[float] = []
    for seed in range(40):
        clock.sleeps.clear()
        fn, _ = failing(*(server_error(502) for _ in range(5)))
        retrying(POLICY, sleep=clock.sleep, clock=clock, rng=random.Random(seed))(fn)
        for attempt, interval in enumerate(clock.sleeps, start=1):
            assert 0 <= interval <= min(POLICY.cap_s, POLICY.base_s * 2 ** (attempt - 1))
        seen.extend(clock.sleeps)
    assert min(seen) < 0.25 < max(seen)  # really jittered, not a fixed schedule


def test_stops_after_the_attempts_and_says_the_budget_is_spent(clock: FakeClock) -> None:
    errors = [server_error(504) for _ in range(10)]
    fn, calls = failing(*errors)
    with pytest.raises(ApiError) as info:
        retrying(POLICY, sleep=clock.sleep, clock=clock)(fn)
    assert len(calls) == POLICY.attempts
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED
    assert info.value.status == 504
    assert info.value.__cause__ is errors[POLICY.attempts - 1]


def test_stops_before_a_wait_that_would_pass_the_deadline(clock: FakeClock) -> None:
    policy = RetryPolicy("short", attempts=10, deadline_s=10.0, base_s=4.0, cap_s=8.0)
    fn, calls = failing(*(server_error() for _ in range(10)))
    with pytest.raises(ApiError) as info:
        retrying(policy, sleep=clock.sleep, clock=clock, rng=MaxRng())(fn)
    assert clock.sleeps == [4.0]  # 4 + 8 > 10: stop instead of sleeping past the deadline
    assert len(calls) == 2
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED


def test_deadline_counts_time_spent_in_attempts(clock: FakeClock) -> None:
    policy = RetryPolicy("short", attempts=10, deadline_s=10.0, base_s=1.0, cap_s=1.0)

    def slow() -> str:
        clock.now += 6  # each attempt takes 6 s
        raise server_error()

    with pytest.raises(ApiError):
        retrying(policy, sleep=clock.sleep, clock=clock, rng=MaxRng())(slow)
    assert clock.sleeps == [1.0]


def test_retry_after_beyond_the_deadline_raises_throttled_for_the_caller_to_defer(clock: FakeClock) -> None:
    fn, calls = failing(throttled(600))
    with pytest.raises(ThrottledError) as info:
        retrying(RetryPolicy("m", 5, 60.0, 1.0, 10.0), sleep=clock.sleep, clock=clock)(fn)
    assert clock.sleeps == []
    assert len(calls) == 1
    assert info.value.retry_after == 600
    assert info.value.retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_never_retries_other_4xx(status: int, clock: FakeClock) -> None:
    error = ApiError("no", status=status, code="X")
    fn, calls = failing(error)
    with pytest.raises(ApiError) as info:
        retrying(POLICY, sleep=clock.sleep, clock=clock)(fn)
    assert info.value is error
    assert len(calls) == 1
    assert clock.sleeps == []


def test_never_retries_contract_violations(clock: FakeClock) -> None:
    fn, calls = failing(ContractViolation("html"))
    with pytest.raises(ContractViolation):
        retrying(POLICY, sleep=clock.sleep, clock=clock)(fn)
    assert len(calls) == 1


def test_transport_failures_are_retried_with_backoff(clock: FakeClock) -> None:
    fn, calls = failing(ApiError("no answer (ConnectTimeout)", retryable=True))
    assert retrying(POLICY, sleep=clock.sleep, clock=clock, rng=MaxRng())(fn) == "ok"
    assert clock.sleeps == [0.5]
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (throttled(None, status=429), True),
        (server_error(500), True),
        (server_error(502), True),
        (server_error(503), True),
        (ApiError("x", retryable=True), True),
        (ApiError("x", retryable=False), False),
        (ApiError("x", status=501), False),
        (ApiError("x", status=409), False),
        (ContractViolation("x"), False),
        (ValueError("x"), False),
    ],
)
def test_is_retryable(error: BaseException, expected: bool) -> None:
    assert is_retryable(error) is expected


def test_throttled_without_retry_after_backs_off(clock: FakeClock) -> None:
    fn, _ = failing(throttled(None))
    retrying(POLICY, sleep=clock.sleep, clock=clock, rng=MaxRng())(fn)
    assert clock.sleeps == [0.5]


def test_each_retry_is_logged_with_its_reason(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    fn, _ = failing(throttled(2))
    with caplog.at_level(logging.WARNING, logger="rce_lib.hooks.retry"):
        retrying(POLICY, sleep=clock.sleep, clock=clock)(fn)
    (record,) = caplog.records
    assert "test: attempt 1/6" in record.getMessage()
    assert "SERVICE_AT_CAPACITY" in record.getMessage()


def test_a_policy_object_can_be_reused_call_after_call(clock: FakeClock) -> None:
    policy = RetryPolicy("short", attempts=3, deadline_s=10.0, base_s=4.0, cap_s=4.0)
    retry = retrying(policy, sleep=clock.sleep, clock=clock, rng=MaxRng())
    for _ in range(3):  # the deadline restarts with each call
        fn, calls = failing(server_error())
        assert retry(fn) == "ok"
        assert len(calls) == 2


def test_async_policy_uses_the_same_rules(clock: FakeClock) -> None:
    errors: list[BaseException] = [throttled(5), server_error(502)]
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"

    async def main() -> Any:
        return await async_retrying(POLICY, sleep=clock.asleep, clock=clock, rng=MaxRng())(fn)

    assert asyncio.run(main()) == "ok"
    assert clock.sleeps == [5 + POLICY.throttle_jitter_s, 1.0]
    assert len(calls) == 3


def test_async_policy_stops_on_attempts(clock: FakeClock) -> None:
    async def fn() -> str:
        raise server_error()

    async def main() -> Any:
        return await async_retrying(POLLS, sleep=clock.asleep, clock=clock)(fn)

    with pytest.raises(ApiError) as info:
        asyncio.run(main())
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED
    assert len(clock.sleeps) <= POLLS.attempts - 1
