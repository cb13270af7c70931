"""The named tenacity policies, one per kind of call.

The contract says: 429/503 come with Retry-After (seconds or HTTP-date) and
callers must wait *at least* that long; other 5xx and transport faults are
transient; every other 4xx is an answer, not a fault. POST/PUT carry an
Idempotency-Key, so retrying a mutation replays it instead of starting twice.

A policy is data (`RetryPolicy`); `retrying()` / `async_retrying()` turn it into a
fresh tenacity object per call, with injectable sleep, clock and randomness so
that tests can assert the exact intervals.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NoReturn

import tenacity
from tenacity import RetryCallState

from rce_lib.errors import ApiError, ContractViolation, Reason, ThrottledError

log = logging.getLogger(__name__)

#: Statuses worth another try (429/503 honour Retry-After, the others back off).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for one kind of call: attempts AND a total deadline, full-jitter backoff."""

    name: str
    attempts: int
    deadline_s: float
    base_s: float
    cap_s: float
    #: Extra random wait on top of a Retry-After, so throttled callers do not return in lockstep.
    throttle_jitter_s: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.deadline_s <= 0 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"invalid retry policy {self!r}")
        if self.throttle_jitter_s < 0:
            raise ValueError("throttle_jitter_s must be >= 0")


#: GETs: cheap to repeat, callers are usually waiting on them.
READS = RetryPolicy("reads", attempts=5, deadline_s=60.0, base_s=0.5, cap_s=8.0)
#: POST/PUT with an Idempotency-Key: safe to repeat; capacity waits (503) can be long.
MUTATIONS = RetryPolicy("mutations", attempts=6, deadline_s=180.0, base_s=1.0, cap_s=20.0)
#: Trigger polls: the trigger polls again anyway, so give up early and let it back off.
POLLS = RetryPolicy("polls", attempts=4, deadline_s=30.0, base_s=1.0, cap_s=8.0)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date); None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def is_retryable(exc: BaseException | None) -> bool:
    """Whether another attempt may help: throttling, 5xx, and transport faults only."""
    if exc is None or isinstance(exc, ContractViolation):
        return False
    if isinstance(exc, ThrottledError):
        return True
    if isinstance(exc, ApiError):
        # status None means the request never got an HTTP answer (connect/read failure).
        return exc.retryable if exc.status is None else exc.status in RETRY_STATUSES
    return False


def transport_error(
    route: str, exc: BaseException, *, retryable: bool = True, secrets: Iterable[str] = ()
) -> ApiError:
    """An ApiError for a request that got no HTTP answer.

    Raise it `from None`: the transport exception holds the prepared request, headers
    (the token) included, which error reporters may serialise.
    """
    detail = str(exc)
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, "***")
    detail = " ".join(detail.split())[:200]
    return ApiError(f"{route}: no answer ({type(exc).__name__}: {detail})", retryable=retryable)


class _Wait:
    """Retry-After (plus a small positive jitter) when given, else full-jitter exponential backoff."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            return exc.retry_after + self._rng.uniform(0.0, self._policy.throttle_jitter_s)
        ceiling = min(self._policy.cap_s, self._policy.base_s * 2 ** (state.attempt_number - 1))
        return self._rng.uniform(0.0, ceiling)


class _Stop:
    """Stop on attempts, or when the next wait would end past the deadline."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._start = clock()

    def mark_start(self, state: RetryCallState) -> None:
        if state.attempt_number == 1:
            self._start = self._clock()

    def __call__(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._policy.attempts:
            return True
        elapsed = self._clock() - self._start
        return elapsed + state.upcoming_sleep > self._policy.deadline_s


def _exhausted(policy: RetryPolicy) -> Callable[[RetryCallState], NoReturn]:
    def raise_last(state: RetryCallState) -> NoReturn:
        exc = state.outcome.exception() if state.outcome else None
        if not isinstance(exc, ApiError):  # pragma: no cover - only ApiErrors are retried
            raise RuntimeError("retry budget spent without an ApiError") from exc
        message = f"{exc.message} (retry budget of {policy.name} spent after {state.attempt_number} attempts)"
        kind = ThrottledError if isinstance(exc, ThrottledError) else ApiError
        raise kind(
            message,
            status=exc.status,
            code=exc.code,
            reason=Reason.RETRY_BUDGET_EXHAUSTED,
            retryable=True,
            retry_after=exc.retry_after,
        ) from exc

    return raise_last


def _log_retry(policy: RetryPolicy, logger: logging.Logger) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "%s: attempt %d/%d failed (%s); retrying in %.2fs",
            policy.name,
            state.attempt_number,
            policy.attempts,
            exc,
            state.upcoming_sleep,
        )

    return before_sleep


def _common(
    policy: RetryPolicy, clock: Callable[[], float], rng: random.Random | None, logger: logging.Logger
) -> dict[str, object]:
    stop = _Stop(policy, clock)
    return {
        "retry": tenacity.retry_if_exception(is_retryable),
        "wait": _Wait(policy, rng or random.Random()),
        "stop": stop,
        "before": stop.mark_start,
        "before_sleep": _log_retry(policy, logger),
        "retry_error_callback": _exhausted(policy),
        "reraise": True,
    }


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    logger: logging.Logger = log,
) -> tenacity.Retrying:
    """A fresh `tenacity.Retrying` for one call under this policy."""
    return tenacity.Retrying(sleep=sleep, **_common(policy, clock, rng, logger))  # type: ignore[arg-type]


def async_retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    logger: logging.Logger = log,
) -> tenacity.AsyncRetrying:
    """A fresh `tenacity.AsyncRetrying` for one call under this policy."""
    return tenacity.AsyncRetrying(sleep=sleep, **_common(policy, clock, rng, logger))  # type: ignore[arg-type]
