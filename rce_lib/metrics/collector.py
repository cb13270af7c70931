"""A prometheus-client collector that derives every rce metric from the shared ledger.

Counters come from the ledger's append-only event log, read incrementally (a
cursor on the event id) and folded into in-memory totals; gauges come from the
progress table at each scrape; downstream request counters come from the
counter table the workers add to. Every number is a function of the shared
database, so any exporter process on any host serves the same values, and a
restarted exporter recomputes the same totals from the log instead of resetting.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rce_lib.ledger import Event, EventKind, Ledger
from rce_lib.metrics import catalog
from rce_lib.metrics.downstream import labels_key
from rce_lib.pacing.store import Pacer

log = logging.getLogger(__name__)

_SDDC_KEY = tuple[str, str, str, str]  # rollout, wave, sddc_id, phase
HELD_BY_GATE_EVENT = "gate_held_by_kill_switch"
BRAKE_EVENT = "brake_applied"
_BRAKE_BY = {"KILL_SWITCH": "kill_switch", "ERROR_BUDGET_EXHAUSTED": "error_budget"}


class _Histogram:
    """Bucket counts (not cumulative), sum and count of one label set."""

    __slots__ = ("counts", "n", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class LedgerCollector(Collector):
    """Serves the catalog's metrics from one ledger. Thread-safe; one per exporter process.

    :param phase_max_seconds: the per-phase bound past which an SDDC is stuck.
    :param max_waves: distinct wave label values kept before new ones become `other`.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        phase_max_seconds: Mapping[str, float] | None = None,
        max_waves: int = 200,
        batch: int = 5000,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.phase_max_seconds = dict(phase_max_seconds or catalog.DEFAULT_PHASE_MAX_SECONDS)
        self._max_waves = max_waves
        self._batch = batch
        self._now = now
        self._lock = threading.Lock()
        self._cursor = 0
        self._waves: set[str] = set()
        self._phase_total: dict[tuple[str, ...], float] = defaultdict(float)
        self._retries: dict[tuple[str, ...], float] = defaultdict(float)
        self._durations: dict[tuple[str, ...], _Histogram] = {}
        self._gate: dict[tuple[str, ...], float] = defaultdict(float)
        self._wave_runs: dict[tuple[str, ...], float] = defaultdict(float)
        self._held: dict[tuple[str, ...], float] = defaultdict(float)
        self._drift: dict[tuple[str, ...], float] = defaultdict(float)
        self._drift_open: dict[str, str] = {}
        self._last_start: dict[_SDDC_KEY, datetime] = {}
        self._last_failure: dict[_SDDC_KEY, str] = {}

    # ------------------------------------------------------------------ scrape

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            up = 1.0
            gauges: list[Metric] = []
            downstream: list[Metric] = []
            try:
                self._catch_up()
                gauges = self._gauges()
                downstream = list(_downstream(self.ledger.counters()))
            except Exception:
                log.warning("could not read the ledger for metrics", exc_info=True)
                up = 0.0
            yield from self._counters()
            yield from gauges
            yield from downstream
            ledger_up = GaugeMetricFamily(catalog.LEDGER_UP.name, catalog.LEDGER_UP.help)
            ledger_up.add_metric([], up)
            yield ledger_up

    def describe(self) -> Iterable[Metric]:
        return []  # collected lazily: registering must not touch the database

    # ------------------------------------------------------------------ events

    def _catch_up(self) -> None:
        while True:
            events = self.ledger.events(after_id=self._cursor, limit=self._batch)
            for event in events:
                self._fold(event)
                self._cursor = event.id
            if len(events) < self._batch:
                return

    def _wave(self, wave: str) -> str:
        if wave in self._waves:
            return wave
        if len(self._waves) >= self._max_waves:
            return catalog.OTHER
        self._waves.add(wave)
        return wave

    def _fold(self, event: Event) -> None:
        kind = event.kind
        phase = catalog.bounded(event.phase, catalog.PHASES)
        key: _SDDC_KEY = (event.rollout, event.wave, event.sddc_id or "", phase)
        data: Mapping[str, Any] = event.data if isinstance(event.data, Mapping) else {}
        if kind in (EventKind.PHASE_STARTED, EventKind.ROLLBACK_STARTED):
            failed = self._last_failure.pop(key, None)
            if failed is not None:
                self._retries[(self._wave(event.wave), phase, catalog.bounded(failed, catalog.REASONS))] += 1
            self._last_start[key] = event.ts
        elif kind in (EventKind.PHASE_SUCCEEDED, EventKind.PHASE_SKIPPED):
            outcome = (
                catalog.Outcome.SUCCEEDED if kind == EventKind.PHASE_SUCCEEDED else catalog.Outcome.SKIPPED
            )
            self._phase_end(key, event, outcome, catalog.NONE, _number(data.get("duration_s")))
            self._last_failure.pop(key, None)
        elif kind == EventKind.PHASE_FAILED:
            code = str(data.get("code") or "")
            self._phase_end(key, event, catalog.Outcome.FAILED, catalog.bounded(code, catalog.REASONS), None)
            self._last_failure[key] = code
        elif kind == "gate_decision":
            decision = "hold" if data.get("holding") else data.get("decision")
            self._gate[(self._wave(event.wave), catalog.bounded(decision, catalog.GATE_DECISION_VALUES))] += 1
        elif kind == EventKind.WAVE_SUMMARY:
            result = data.get("reason") or "promoted"
            self._wave_runs[(self._wave(event.wave), catalog.bounded(result, catalog.WAVE_RESULTS))] += 1
        elif kind == HELD_BY_GATE_EVENT:
            self._held[(self._wave(event.wave), "kill_switch")] += 1
        elif kind == BRAKE_EVENT:
            by = _BRAKE_BY.get(str(data.get("reason")), catalog.OTHER)
            self._held[(self._wave(event.wave), by)] += 1
        elif kind == EventKind.DRIFT_DETECTED and "drift" in data:
            drift = catalog.bounded(data.get("drift"), catalog.DRIFT_KINDS)
            came_of = str(data.get("outcome") or "")
            self._drift[
                (
                    drift,
                    catalog.bounded(data.get("repair"), catalog.DRIFT_REPAIRS),
                    catalog.bounded(came_of, catalog.DRIFT_OUTCOMES),
                )
            ] += 1
            if came_of == "flagged" and data.get("fingerprint"):
                self._drift_open[str(data["fingerprint"])] = drift
        elif kind == EventKind.DRIFT_RESOLVED and data.get("fingerprint"):
            self._drift_open.pop(str(data["fingerprint"]), None)

    def _phase_end(
        self, key: _SDDC_KEY, event: Event, outcome: str, reason: str, duration: float | None
    ) -> None:
        wave, phase = self._wave(event.wave), key[3]
        self._phase_total[(wave, phase, outcome, reason)] += 1
        started = self._last_start.pop(key, None)
        if duration is None and started is not None:
            duration = max((event.ts - started).total_seconds(), 0.0)
        if duration is not None:
            hist = self._durations.setdefault((wave, phase, outcome), _Histogram(catalog.PHASE_BUCKETS))
            hist.observe(catalog.PHASE_BUCKETS, duration)

    # ------------------------------------------------------------------ families

    def _counters(self) -> Iterator[Metric]:
        # Series born at 1 defeat increase() in alert rules: start the few per-wave ones at 0.
        for wave in self._waves:
            for decision in catalog.GATE_DECISION_VALUES:
                self._gate.setdefault((wave, decision), 0.0)
            for by in catalog.HELD_BY:
                self._held.setdefault((wave, by), 0.0)
        for spec, values in (
            (catalog.PHASE_TOTAL, self._phase_total),
            (catalog.PHASE_RETRIES, self._retries),
            (catalog.GATE_DECISIONS, self._gate),
            (catalog.WAVE_RUNS, self._wave_runs),
            (catalog.WAVE_HELD, self._held),
            (catalog.DRIFT_TOTAL, self._drift),
        ):
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in sorted(values.items()):
                family.add_metric(list(labels), value)
            yield family
        hist = HistogramMetricFamily(
            catalog.PHASE_DURATION.name, catalog.PHASE_DURATION.help, labels=catalog.PHASE_DURATION.labels
        )
        for labels, h in sorted(self._durations.items()):
            hist.add_metric(list(labels), h.cumulative(catalog.PHASE_BUCKETS), h.total)
        yield hist
        open_ = GaugeMetricFamily(
            catalog.DRIFT_OPEN.name, catalog.DRIFT_OPEN.help, labels=catalog.DRIFT_OPEN.labels
        )
        by_kind: dict[str, int] = defaultdict(int)
        for kind in self._drift_open.values():
            by_kind[kind] += 1
        for kind in sorted(catalog.DRIFT_KINDS | set(by_kind)):
            open_.add_metric([kind], float(by_kind.get(kind, 0)))
        yield open_
        bound = GaugeMetricFamily(
            catalog.PHASE_MAX.name, catalog.PHASE_MAX.help, labels=catalog.PHASE_MAX.labels
        )
        for phase, seconds in sorted(self.phase_max_seconds.items()):
            bound.add_metric([phase], seconds)
        yield bound

    def _gauges(self) -> list[Metric]:
        sddcs = GaugeMetricFamily(catalog.SDDCS.name, catalog.SDDCS.help, labels=catalog.SDDCS.labels)
        in_phase = GaugeMetricFamily(
            catalog.SDDCS_IN_PHASE.name, catalog.SDDCS_IN_PHASE.help, labels=catalog.SDDCS_IN_PHASE.labels
        )
        states: dict[tuple[str, str], int] = defaultdict(int)
        phases: dict[tuple[str, str, str], int] = defaultdict(int)
        for wave_name, phase_name, status, n in self.ledger.progress_counts():
            wave = self._wave(wave_name)
            phase = catalog.bounded(phase_name, catalog.PHASES)
            state = "done" if phase == "done" else catalog.bounded(status, catalog.SDDC_STATES)
            states[(wave, state)] += n
            phases[(wave, phase, catalog.bounded(status, catalog.STATUSES))] += n
        for (wave, state), n in sorted(states.items()):
            sddcs.add_metric([wave, state], float(n))
        for labels, n in sorted(phases.items()):
            in_phase.add_metric(list(labels), float(n))
        oldest = GaugeMetricFamily(
            catalog.PHASE_OLDEST_RUNNING.name,
            catalog.PHASE_OLDEST_RUNNING.help,
            labels=catalog.PHASE_OLDEST_RUNNING.labels,
        )
        now = self._now()
        ages: dict[tuple[str, str], float] = {}
        for rollout, wave_name, sddc_id, phase_name, updated_at in self.ledger.running_since():
            phase = catalog.bounded(phase_name, catalog.PHASES)
            since = self._last_start.get((rollout, wave_name, sddc_id, phase), updated_at)
            slot = (self._wave(wave_name), phase)
            ages[slot] = max(ages.get(slot, 0.0), max((now - since).total_seconds(), 0.0))
        for wave_phase, age in sorted(ages.items()):
            oldest.add_metric(list(wave_phase), age)
        return [sddcs, in_phase, oldest, *self._pacing()]

    def _pacing(self) -> list[Metric]:
        """Each component service's adaptive limit (-1: open), ceiling (-1: none) and our slots on it."""
        limit = GaugeMetricFamily(
            catalog.DOWNSTREAM_LIMIT.name,
            catalog.DOWNSTREAM_LIMIT.help,
            labels=catalog.DOWNSTREAM_LIMIT.labels,
        )
        held = GaugeMetricFamily(
            catalog.DOWNSTREAM_IN_FLIGHT.name,
            catalog.DOWNSTREAM_IN_FLIGHT.help,
            labels=catalog.DOWNSTREAM_IN_FLIGHT.labels,
        )
        ceiling = GaugeMetricFamily(
            catalog.DOWNSTREAM_CEILING.name,
            catalog.DOWNSTREAM_CEILING.help,
            labels=catalog.DOWNSTREAM_CEILING.labels,
        )
        states = {s.service: s for s in Pacer(self.ledger).states()}
        for service in sorted(catalog.SERVICES - {catalog.Service.CONTROL.value}):
            state = states.get(service)
            limit.add_metric([service], -1.0 if state is None or state.limit is None else state.limit)
            held.add_metric([service], float(state.in_flight if state else 0))
            ceiling.add_metric([service], -1.0 if state is None or state.ceiling is None else state.ceiling)
        return [limit, held, ceiling]


def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        else None
    )


def _downstream(rows: Iterable[tuple[str, str, float]]) -> Iterator[Metric]:
    """The downstream families from the shared counter rows (unknown names or labels are ignored)."""
    import json

    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, labels_text, value in rows:
        try:
            labels = json.loads(labels_text)
        except ValueError:
            continue
        if isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()):
            by_name[name].append((labels, value))

    for spec in (catalog.DOWNSTREAM_REQUESTS, catalog.DOWNSTREAM_THROTTLED):
        family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
        for labels, value in sorted(by_name.get(spec.name, []), key=lambda lv: labels_key(**lv[0])):
            if set(labels) == set(spec.labels):
                family.add_metric([labels[k] for k in spec.labels], value)
        yield family

    dur = catalog.DOWNSTREAM_DURATION
    hist = HistogramMetricFamily(dur.name, dur.help, labels=dur.labels)
    sums = {lv[0].get("service"): lv[1] for lv in by_name.get(f"{dur.name}_sum", [])}
    buckets: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in by_name.get(f"{dur.name}_bucket", []):
        if set(labels) == {"service", "le"}:
            buckets[labels["service"]][labels["le"]] = value
    wanted = [*(repr(b) for b in dur.buckets), "+Inf"]
    for service in sorted(buckets):
        seen = buckets[service]
        # Every observation added to every bucket at or above it, so the rows are cumulative already.
        series = [(le, seen.get(le, 0.0)) for le in wanted]
        hist.add_metric([service], series, sums.get(service, 0.0))
    yield hist
