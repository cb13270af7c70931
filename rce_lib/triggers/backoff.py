"""Poll spacing for downstream tasks (no Airflow): calls grow with log(duration).

Two schedules, both functions of the task's *age* (seconds since it was started):

* `next_poll_delay` (the historical one): ``clamp(growth x age, minimum, maximum)``.
* `poll_delay` (what the engine uses, inline and in the trigger)::

      lo    = max(minimum, growth x age)          # at least a fixed share of the age
      hi    = max(lo, max_growth x age)           # at most a (larger) share of the age
      eta   = age x (100 - p) / p                 # if the task reports p percent (0 as 1)
      delay = clamp(eta, lo, hi)  (lo without a usable progress)
      delay = max(delay, retry_after)             # a Retry-After is always honoured

  Every delay is at least ``growth x age``, so from the age ``minimum / growth`` on each
  poll multiplies the age by at least ``1 + growth``: a task that lasts D seconds costs at most

      polls(D) <= 2 + 1 / growth + log(D x growth / minimum) / log(1 + growth)

  (with the defaults, growth 0.5: ``4 + 1.71 x log2(D / (2 x minimum))``), whatever the
  progress says; a good progress estimate only makes it fewer (tests/triggers/test_backoff.py).
  The cap ``hi`` keeps a bad estimate from sleeping past ``(1 + max_growth) x`` the age; a
  finished task is noticed within ``max_growth x`` its age at worst, ``growth x`` its age
  without progress. There is no fixed cap by default: a fixed cap turns the count linear in D.
"""

from __future__ import annotations

import math

GROWTH = 0.5
MAX_GROWTH = 4.0


def next_poll_delay(elapsed: float, *, minimum: float, maximum: float, growth: float = 0.25) -> float:
    """Wait a fixed share of the time already waited, clamped to [minimum, maximum].

    Waiting `growth` x elapsed makes the poll times a geometric series, so the
    number of polls grows with the logarithm of the task's duration (until the
    cap), while a task that ends is noticed within `growth` of its age.
    """
    return max(minimum, min(maximum, elapsed * growth))


def poll_delay(
    age: float,
    *,
    minimum: float,
    progress: int | None = None,
    growth: float = GROWTH,
    max_growth: float = MAX_GROWTH,
    maximum: float | None = None,
    retry_after: float | None = None,
) -> float:
    """Seconds until the next poll of a task `age` seconds old (see the module docstring).

    `maximum` (optional) is a fixed cap: the poll count then grows linearly once
    ``growth x age`` exceeds it, so the engine leaves it unset by default.
    """
    age = max(0.0, age)
    lo = max(minimum, growth * age)
    hi = max(lo, max_growth * age)
    delay = lo
    if progress is not None and 0 <= progress < 100:
        done = max(progress, 1)  # 0 reported: under 1 % done, at least 99 x age still to go
        delay = min(hi, max(lo, age * (100 - done) / done))
    if maximum is not None and math.isfinite(maximum):
        delay = max(minimum, min(delay, maximum))
    if retry_after:
        delay = max(delay, retry_after)
    return delay


def polls_bound(duration: float, *, minimum: float, growth: float = GROWTH) -> float:
    """The most polls `poll_delay` (no fixed cap) makes for a task of `duration` seconds."""
    knee = minimum / growth
    return 2 + 1 / growth + max(0.0, math.log(max(duration, knee) / knee) / math.log(1 + growth))
