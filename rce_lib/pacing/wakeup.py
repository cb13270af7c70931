"""Wake a phase waiting for a slot as soon as one of its service's slots is given back, later
phases first, then the SDDCs with the most hosts left.

Phases waiting for a slot poll the ledger (`wait_poll_s`); that alone costs every slot a
fraction of a poll interval of idleness, at the bottleneck service too. Phases that run in
the triggerer give their slots back in this very process, so a release here wakes one waiter
(one slot, one waiter: no stampede of ledger reads): the one of the latest phase (`rank`),
the longest waiting among those. A release in another process (a worker, another triggerer) is
seen at the waiter's next poll.

Later phases first, because a slot on vCenter that goes to the 200th precheck instead of an
SDDC's vCenter upgrade holds back that SDDC's NSX upgrade: the wave's bottleneck sits idle
while every SDDC is prechecked first. So a phase in this process also leaves a free slot to a
later phase waiting here for it (`outranked`).

Among waiters of one phase, the SDDC with the most hosts left goes first: hosts are upgraded
one at a time after NSX (the usual bottleneck), so when the biggest pass it first the wave's
tail is the smallest SDDCs' hosts, not an 8-host SDDC's that got its NSX slot last.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class _Waiter:
    rank: int
    seq: int
    loop: asyncio.AbstractEventLoop = field(compare=False)
    event: asyncio.Event = field(compare=False)


#: ranks of one phase span this many host counts (more hosts left than that rank alike)
_HOSTS_PER_PHASE = 1000


def rank(phase: int, hosts_left: int = 0) -> int:
    """A waiter's rank: its phase's place in the order of phases, then its hosts left."""
    return phase * _HOSTS_PER_PHASE + max(0, min(hosts_left, _HOSTS_PER_PHASE - 1))


_lock = threading.Lock()
_waiting: dict[str, list[_Waiter]] = {}
_seq = itertools.count()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's waiters, and must not inherit a held lock."""
    global _lock, _waiting
    _lock, _waiting = threading.Lock(), {}


os.register_at_fork(after_in_child=_after_fork_in_child)


def given_back(service: str) -> None:
    """A slot on `service` was given back in this process: wake its first waiter (any thread)."""
    with _lock:
        queue = _waiting.get(service, [])
        while queue:
            first = max(queue, key=lambda w: (w.rank, -w.seq))
            queue.remove(first)
            if not first.loop.is_closed():
                first.loop.call_soon_threadsafe(first.event.set)
                return


def outranked(service: str, rank: int) -> bool:
    """Whether a waiter ranked above `rank` (a later phase, a bigger SDDC) waits here for a slot
    on `service`."""
    with _lock:
        return any(w.rank > rank for w in _waiting.get(service, ()))


async def given_back_or_timeout(service: str, timeout: float, rank: int = 0) -> bool:
    """Wait until a slot on `service` is given back here for this waiter (True) or `timeout`
    passes (False). `rank`: the waiter's place in the order (`rank`)."""
    waiter = _Waiter(rank, next(_seq), asyncio.get_running_loop(), asyncio.Event())
    with _lock:
        _waiting.setdefault(service, []).append(waiter)
    try:
        await asyncio.wait_for(waiter.event.wait(), timeout)
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
