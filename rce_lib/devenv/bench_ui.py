"""Does the Airflow UI still answer during a big wave? Time the reads its grid view makes.

Issue 6 asks that the scheduler and UI still respond at N = 1000. The grid view of a wave
is the UI's heaviest page (every mapped task instance of the run); the bench times the three
requests it makes, every progress interval, while the wave runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from rce_lib.devenv.bench_phases import _quantiles


class _Rest(Protocol):
    def ui_get(self, path: str, **params: Any) -> int: ...


@dataclass
class UiProbe:
    """Latency of the grid view's reads, sampled during the run."""

    dag_id: str
    run_id: str
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def paths(self) -> list[tuple[str, dict[str, Any]]]:
        """The grid view's reads (Airflow 3.3 `/ui/grid/...`), relative to /ui."""
        return [
            (f"/grid/structure/{self.dag_id}", {}),
            (f"/grid/runs/{self.dag_id}", {"limit": 10}),
            (f"/grid/ti_summaries/{self.dag_id}", {"run_ids": self.run_id}),
        ]

    def sample(self, rest: _Rest) -> float | None:
        """Load the grid view once; its time (all three reads), or None when a read failed."""
        t0 = time.monotonic()
        for path, params in self.paths():
            try:
                status = rest.ui_get(path, **params)
            except OSError as err:  # requests' errors, timeouts included
                self.errors.append(f"{path}: {type(err).__name__}")
                return None
            if status >= 400:
                self.errors.append(f"{path}: HTTP {status}")
                return None
        elapsed = time.monotonic() - t0
        self.seconds.append(elapsed)
        return elapsed

    def summary(self) -> dict[str, Any]:
        return {
            "grid_view_s": _quantiles(self.seconds),
            "errors": len(self.errors),
            "error_examples": self.errors[:3],
        }


def render(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "not sampled"
    q = summary.get("grid_view_s")
    timed = (
        f"median {q['median']:.2f} s, p90 {q['p90']:.2f} s, max {q['max']:.2f} s over {q['n']} loads"
        if q
        else "no load answered"
    )
    return f"{timed}; failed loads {summary.get('errors', 0)}"
