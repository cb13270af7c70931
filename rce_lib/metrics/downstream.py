"""Downstream request metrics, summed across processes through a shared sink (the ledger).

Tasks run in short-lived worker processes on several machines, so a
per-process prometheus-client registry would show whatever the scraped process
happened to see. Instead each process adds its increments to shared counters
(`Ledger.add_counters`) at most every `flush_every` seconds, from a timer
thread, and once more at exit; the exporter reads the sums. A process killed
with -9 loses at most its last `flush_every` seconds of counts.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Protocol

from rce_lib.metrics import catalog

log = logging.getLogger(__name__)

Increments = dict[tuple[str, str], float]
Sink = Callable[[Mapping[tuple[str, str], float]], None]

#: More distinct keys than this cannot come from bounded labels: drop instead of growing.
MAX_PENDING_KEYS = 2_000


class Observed(Protocol):
    """What the recorder needs of a request (the hooks' ApiRequest has it)."""

    @property
    def service(self) -> str: ...


def labels_key(**labels: str) -> str:
    """Canonical text of a label set: the counter table's key and the exporter's input."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def increments_for(service: str, status: int | None, seconds: float) -> Increments:
    """The counter increments one HTTP attempt makes (labels bounded here, once)."""
    svc = catalog.bounded(service, catalog.SERVICES)
    out: Increments = {
        (
            catalog.DOWNSTREAM_REQUESTS.name,
            labels_key(service=svc, status_class=catalog.status_class(status)),
        ): 1.0,
        (f"{catalog.DOWNSTREAM_DURATION.name}_sum", labels_key(service=svc)): max(seconds, 0.0),
        (f"{catalog.DOWNSTREAM_DURATION.name}_count", labels_key(service=svc)): 1.0,
    }
    for le in (*catalog.REQUEST_BUCKETS, float("inf")):
        if seconds <= le:
            out[(f"{catalog.DOWNSTREAM_DURATION.name}_bucket", labels_key(service=svc, le=_le(le)))] = 1.0
    if status in (429, 503):
        out[(catalog.DOWNSTREAM_THROTTLED.name, labels_key(service=svc, code=str(status)))] = 1.0
    return out


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class RequestRecorder:
    """Accumulates increments in memory and hands them to the sink in batches."""

    def __init__(
        self, sink: Sink, *, flush_every: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sink = sink
        self._flush_every = flush_every
        self._clock = clock
        self._pending: Increments = defaultdict(float)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.dropped = 0

    def observe(self, req: Observed, status: int | None, seconds: float) -> None:
        """The hooks' `on_request` observer: never raises, never blocks on the sink."""
        try:
            self.add(increments_for(req.service, status, seconds))
        except Exception:  # metrics must never fail an upgrade
            log.warning("could not record a downstream request metric", exc_info=True)

    def add(self, increments: Mapping[tuple[str, str], float]) -> None:
        with self._lock:
            for key, value in increments.items():
                if key not in self._pending and len(self._pending) >= MAX_PENDING_KEYS:
                    self.dropped += 1
                    continue
                self._pending[key] += value
            if self._timer is None and self._flush_every > 0:
                self._timer = threading.Timer(self._flush_every, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()

    def _flush_from_timer(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def flush(self) -> bool:
        """Write what is pending; on failure keep it for the next try. True if nothing is left."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = dict(self._pending), defaultdict(float)
            if not batch:
                return True
            try:
                self._sink(batch)
            except Exception:
                log.warning(
                    "could not write %d downstream metric counters; keeping them", len(batch), exc_info=True
                )
                self.add(batch)
                return False
            return True

    def pending(self) -> Increments:
        with self._lock:
            return dict(self._pending)


_recorders: dict[tuple[int, str], RequestRecorder] = {}
_recorders_lock = threading.Lock()


def ledger_recorder(ledger_url: str) -> RequestRecorder:
    """This process's recorder for one ledger, flushed at exit. Keyed by pid too: a
    forked task process must not inherit its parent's pending counts or dead timer."""
    key = (os.getpid(), ledger_url)
    with _recorders_lock:
        recorder = _recorders.get(key)
        if recorder is None:
            from rce_lib.ledger import Ledger

            recorder = RequestRecorder(Ledger(ledger_url).add_counters)
            atexit.register(recorder.flush)
            _recorders[key] = recorder
        return recorder
