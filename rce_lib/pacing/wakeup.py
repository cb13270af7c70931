"""Wake a phase waiting for a slot as soon as one of its service's slots is given back.

Phases waiting for a slot poll the ledger (`wait_poll_s`); that alone costs every slot a
fraction of a poll interval of idleness, at the bottleneck service too. Phases that run in
the triggerer give their slots back in this very process, so a release here wakes the phase
that has waited longest for that service: one slot, one waiter (no stampede of ledger reads).
A release in another process (a worker, another triggerer) is seen at the waiter's next poll.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]

_lock = threading.Lock()
_waiting: dict[str, deque[_Waiter]] = {}


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's waiters, and must not inherit a held lock."""
    global _lock, _waiting
    _lock, _waiting = threading.Lock(), {}


os.register_at_fork(after_in_child=_after_fork_in_child)


def given_back(service: str) -> None:
    """A slot on `service` was given back in this process: wake its longest waiter (any thread)."""
    with _lock:
        queue = _waiting.get(service)
        while queue:
            loop, event = queue.popleft()
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
                return


async def given_back_or_timeout(service: str, timeout: float) -> bool:
    """Wait until a slot on `service` is given back here (True) or `timeout` passes (False)."""
    waiter: _Waiter = (asyncio.get_running_loop(), asyncio.Event())
    with _lock:
        _waiting.setdefault(service, deque()).append(waiter)
    try:
        await asyncio.wait_for(waiter[1].wait(), timeout)
        return True
    except TimeoutError:
        return False
    finally:
        with _lock:
            queue = _waiting.get(service)
            if queue is not None and waiter in queue:
                queue.remove(waiter)


def waiting(service: str) -> int:
    """How many wait here for `service` (tests, diagnostics)."""
    with _lock:
        return len(_waiting.get(service, ()))
