"""Fixtures for plan tests: a valid plan as data, a plan-file writer and an SDDC factory."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rce_lib.plan.loader import clear_plan_cache

VALID_PLAN: dict[str, Any] = {
    "rollout": "fleet-test",
    "release": "1.26.0",
    "defaults": {
        "max_parallel": 4,
        "max_fail_percentage": 20,
        "bake_seconds": 30,
        "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
        "schedule": None,
    },
    "waves": [
        {"name": "canary", "size": 6, "canary_size": 2},
        {"name": "early", "schedule": "after:canary", "size": "25%"},
        {"name": "main", "schedule": "after:early", "size": "100%", "max_parallel": 8},
    ],
}


@pytest.fixture(autouse=True)
def _fresh_plan_cache() -> Iterator[None]:
    clear_plan_cache()
    yield
    clear_plan_cache()


@pytest.fixture
def plan_data() -> dict[str, Any]:
    """A deep copy of a valid plan, to break in one place per test."""
    return copy.deepcopy(VALID_PLAN)


@pytest.fixture
def write_plan(tmp_path: Path) -> Callable[[Any], Path]:
    """Write data (dumped as YAML) or raw text to a plan file and return its path."""

    def write(content: Any, name: str = "rollout.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write
