"""What the simulator saw: request counts, task concurrency, throttling, and the two
client misbehaviours it exists to catch (duplicate starts, Retry-After violations)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

SERVICES = ("vcenter", "nsx", "esx")


class Counters:
    """Plain in-memory counters; `dump()` is the GET /sim/counters body and the persisted row."""

    def __init__(self, details_max: int) -> None:
        self.details_max = details_max
        self.reset()

    def reset(self, current: dict[str, int] | None = None) -> None:
        self.since = time.time()
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.mutating_calls = 0
        self.tasks_created: Counter[str] = Counter()
        self.task_polls: Counter[str] = Counter()
        """GET /api/v1/tasks/{id} answered, by the task's type (which phase polls)."""
        self.peak: dict[str, int] = {s: (current or {}).get(s, 0) for s in SERVICES}
        self.http_429: Counter[str] = Counter()
        self.http_503: Counter[str] = Counter()
        self.capacity_503: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.duplicate_starts = 0
        self.duplicate_details: list[dict[str, Any]] = []
        self.violations = 0
        self.violation_details: list[dict[str, Any]] = []

    def request(self, method: str, route: str, status: int | str) -> None:
        self.requests[(method, route, str(status))] += 1

    def concurrency(self, service: str, current: int) -> None:
        if current > self.peak.get(service, 0):
            self.peak[service] = current

    def duplicate(self, detail: dict[str, Any]) -> None:
        self.duplicate_starts += 1
        self._bounded(self.duplicate_details, detail)

    def violation(self, detail: dict[str, Any]) -> None:
        self.violations += 1
        self._bounded(self.violation_details, detail)

    def _bounded(self, details: list[dict[str, Any]], detail: dict[str, Any]) -> None:
        details.append(detail)
        if len(details) > self.details_max:
            del details[0 : len(details) - self.details_max]

    def dump(self, current: dict[str, int]) -> dict[str, Any]:
        return {
            "since": self.since,
            "requests_total": sum(self.requests.values()),
            "requests": [
                {"method": m, "route": r, "status": s, "count": n}
                for (m, r, s), n in sorted(self.requests.items())
            ],
            "mutating_calls": self.mutating_calls,
            "tasks_created": dict(self.tasks_created),
            "task_polls": dict(self.task_polls),
            "concurrent": {s: {"current": current.get(s, 0), "peak": self.peak.get(s, 0)} for s in SERVICES},
            "http_429": dict(self.http_429),
            "http_503": dict(self.http_503),
            "capacity_503": dict(self.capacity_503),
            "injected": dict(self.injected),
            "duplicate_starts": {"count": self.duplicate_starts, "details": list(self.duplicate_details)},
            "retry_after_violations": {"count": self.violations, "details": list(self.violation_details)},
        }

    def load(self, row: dict[str, Any]) -> None:
        self.since = float(row.get("since", time.time()))
        self.requests = Counter(
            {(r["method"], r["route"], str(r["status"])): int(r["count"]) for r in row.get("requests", [])}
        )
        self.mutating_calls = int(row.get("mutating_calls", 0))
        self.tasks_created = Counter(row.get("tasks_created", {}))
        self.task_polls = Counter(row.get("task_polls", {}))
        self.peak = {s: int(v.get("peak", 0)) for s, v in row.get("concurrent", {}).items()}
        self.http_429 = Counter(row.get("http_429", {}))
        self.http_503 = Counter(row.get("http_503", {}))
        self.capacity_503 = Counter(row.get("capacity_503", {}))
        self.injected = Counter(row.get("injected", {}))
        dup = row.get("duplicate_starts", {})
        self.duplicate_starts = int(dup.get("count", 0))
        self.duplicate_details = list(dup.get("details", []))
        vio = row.get("retry_after_violations", {})
        self.violations = int(vio.get("count", 0))
        self.violation_details = list(vio.get("details", []))
