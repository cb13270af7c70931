"""Poll spacing for long downstream tasks (no Airflow): calls grow with log(duration)."""

from __future__ import annotations


def next_poll_delay(elapsed: float, *, minimum: float, maximum: float, growth: float = 0.25) -> float:
    """Wait a fixed share of the time already waited, clamped to [minimum, maximum].

    Waiting `growth` x elapsed makes the poll times a geometric series, so the
    number of polls grows with the logarithm of the task's duration (until the
    cap), while a task that ends is noticed within `growth` of its age.
    """
    return max(minimum, min(maximum, elapsed * growth))
