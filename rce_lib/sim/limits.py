"""Request-rate token buckets and the Retry-After header in both contract forms."""

from __future__ import annotations

import math
import random
from email.utils import formatdate

from rce_lib.sim.config import Bucket


class TokenBucket:
    """Classic token bucket; `take` answers 0 when allowed, else seconds until a token."""

    def __init__(self, spec: Bucket) -> None:
        self.rate = spec.rate
        self.burst = float(spec.burst)
        self.tokens = float(spec.burst)
        self.stamp: float | None = None

    def take(self, now: float) -> float:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def retry_after_seconds(delay: float) -> int:
    """Whole seconds, rounded up, at least 1: a client waiting that long is never early."""
    return max(1, math.ceil(delay - 1e-9))


def retry_after_header(seconds: int, now: float, form: str, rng: random.Random) -> str:
    """`seconds` as delta-seconds or as an HTTP-date; the date is rounded up to a whole second
    so that a client computing `date - now` never waits less than `seconds`."""
    if form == "mixed":
        form = rng.choice(("seconds", "http-date"))
    if form == "http-date":
        return formatdate(math.ceil(now + seconds), usegmt=True)
    return str(seconds)
