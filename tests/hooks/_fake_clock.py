"""A clock that only moves when someone sleeps, so retry intervals can be asserted exactly."""

from __future__ import annotations


class FakeClock:
    """Time that only moves when someone sleeps: intervals can be asserted exactly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
