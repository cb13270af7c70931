"""The bench's probe of the Airflow UI's grid view: failures are counted, not fatal.

Its reads against a real api-server are checked in tests/integration/test_promotion_standalone.py.
"""

from __future__ import annotations

from typing import Any

import requests

from rce_lib.devenv.bench_ui import UiProbe, render


class _Rest:
    """The network boundary: answers each UI path with a status, or raises."""

    def __init__(self, answers: dict[str, int | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def ui_get(self, path: str, **params: Any) -> int:
        self.calls.append((path, params))
        answer = self.answers.get(path.split("/")[2], 200)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_load_is_the_three_grid_reads_of_the_run() -> None:
    probe = UiProbe("rce_wave_w", "manual__1")
    rest = _Rest({})
    assert probe.sample(rest) is not None
    assert rest.calls == [
        ("/grid/structure/rce_wave_w", {}),
        ("/grid/runs/rce_wave_w", {"limit": 10}),
        ("/grid/ti_summaries/rce_wave_w", {"run_ids": "manual__1"}),
    ]
    summary = probe.summary()
    assert summary["errors"] == 0 and summary["grid_view_s"]["n"] == 1
    assert "over 1 loads; failed loads 0" in render(summary)


def test_an_error_or_a_timeout_counts_as_a_failed_load() -> None:
    probe = UiProbe("rce_wave_w", "r")
    assert probe.sample(_Rest({"runs": 500})) is None
    assert probe.sample(_Rest({"ti_summaries": requests.Timeout("read timed out")})) is None
    summary = probe.summary()
    assert summary["grid_view_s"] is None
    assert summary["errors"] == 2
    assert summary["error_examples"] == [
        "/grid/runs/rce_wave_w: HTTP 500",
        "/grid/ti_summaries/rce_wave_w: Timeout",
    ]
    assert render(summary) == "no load answered; failed loads 2"
    assert render(None) == "not sampled"
