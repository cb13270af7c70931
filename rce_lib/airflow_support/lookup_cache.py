"""What the triggerer reads over and over (the SDDC API connection, the ledger's URL), kept a minute.

In the triggerer every wait is a new trigger with a new hook, and each hook read its
connection again. A read is a request from the trigger runner to the triggerer's supervisor,
plus one request per secret to mask (six for the SDDC API connection), and every request wakes
the supervisor's loop, which then queries Airflow's metadata DB (trigger assignment, clean-up)
before it sleeps again. Under `rce bench` (20 SDDCs) connection reads and their masks were 61%
of the supervisor's requests (docs/performance.md). A task process reads a connection once and
ends, so only the triggerer keeps them.

A kept connection is dropped when the API answers 401 (a rotated token is read again at once)
and after `RCE_TRIGGERER_LOOKUP_CACHE_S` seconds (default 60; 0 turns the cache off). The kill
switches (two Variables, each read is a request and a mask: four wake-ups per check, checked
before every step) are kept 5 seconds at most, so a switch set acts in the triggerer within 5 s
(plus the step under way), as it would on a worker within one poll.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from rce_lib.airflow_support.preload import command

TTL_ENV = "RCE_TRIGGERER_LOOKUP_CACHE_S"
DEFAULT_TTL_S = 60.0

T = TypeVar("T")


class LookupCache:
    """Values by key for `ttl_s` seconds; a failed lookup is not kept."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._fetching: dict[Hashable, threading.Lock] = {}

    def _fresh(self, key: Hashable) -> tuple[bool, Any]:
        with self._lock:
            kept = self._values.get(key)
            if kept is not None and self._clock() < kept[0]:
                return True, kept[1]
            return False, None

    def _keep(self, key: Hashable, value: Any, ttl_s: float | None) -> None:
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        with self._lock:
            self._values[key] = (self._clock() + ttl, value)

    def get(self, key: Hashable, fetch: Callable[[], T], ttl_s: float | None = None) -> T:
        """`fetch()`, or what it gave less than `ttl_s` (at most the cache's) seconds ago."""
        found, kept = self._fresh(key)
        if found:
            return kept  # type: ignore[no-any-return]
        # One fetch per key at a time: the phases' threads that miss together (a kept value just
        # expired) wait for that one, instead of each sending the supervisor the same request.
        with self._lock:
            fetching = self._fetching.setdefault(key, threading.Lock())
        with fetching:
            found, kept = self._fresh(key)
            if found:
                return kept  # type: ignore[no-any-return]
            value = fetch()
            self._keep(key, value, ttl_s)
            return value

    async def aget(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        found, kept = self._fresh(key)
        if found:
            return kept  # type: ignore[no-any-return]
        value = await fetch()
        self._keep(key, value, None)
        return value

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._values.pop(key, None)


def is_triggerer(argv: Sequence[str]) -> bool:
    """Is `argv` the `airflow triggerer` command line (its trigger runner is forked with it)?"""
    return command(argv)[:1] == ("triggerer",)


def ttl_s(environ: dict[str, str] | None = None) -> float:
    raw = (environ if environ is not None else os.environ).get(TTL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TTL_S
    except ValueError:
        return DEFAULT_TTL_S
    return max(0.0, value)


_process_cache: LookupCache | None = None
_decided = False
_decide_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """Fresh locks in a forked child (the triggerer's runner is forked from its supervisor):
    a parent thread may have held one at the fork. What the parent kept stays valid."""
    global _decide_lock
    _decide_lock = threading.Lock()
    if _process_cache is not None:
        _process_cache._lock = threading.Lock()
        _process_cache._fetching = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


def for_this_process() -> LookupCache | None:
    """The cache of this process: in the triggerer (unless turned off), else None."""
    global _process_cache, _decided
    if not _decided:
        with _decide_lock:
            if not _decided:
                ttl = ttl_s()
                if is_triggerer(sys.argv) and ttl > 0:
                    _process_cache = LookupCache(ttl)
                _decided = True
    return _process_cache


def use(cache: LookupCache | None) -> None:
    """Set this process's cache (tests; None: no cache)."""
    global _process_cache, _decided
    with _decide_lock:
        _process_cache, _decided = cache, True


def get(key: Hashable, fetch: Callable[[], T], ttl_s: float | None = None) -> T:
    """`fetch()`, kept in the triggerer (for `ttl_s`, at most the configured time)."""
    cache = for_this_process()
    return fetch() if cache is None else cache.get(key, fetch, ttl_s)


async def aget(key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
    """`await fetch()`, kept in the triggerer."""
    cache = for_this_process()
    return await fetch() if cache is None else await cache.aget(key, fetch)


def forget(key: Hashable) -> None:
    cache = for_this_process()
    if cache is not None:
        cache.forget(key)


__all__ = ["LookupCache", "aget", "for_this_process", "forget", "get", "is_triggerer", "use"]
