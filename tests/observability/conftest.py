"""Fixtures for the checks of the alert rules and the dashboard (no Prometheus, no Grafana
running; promtool is needed, and a missing promtool fails the tests that use it). Paths are
in _paths.py.

rule_groups -> list: the groups of include/prometheus/rce-alerts.yaml.
alert_rules -> list: every alerting rule (dicts as in the file).
recording_rules -> dict: recorded series name -> its rule.
known_series -> dict: series name -> label names, for the catalog's series and the recording
    rules' (rce_lib.metrics.promql.series_labels / recorded_labels).
bounded_values -> dict: label name -> the values the exporter can give it (catalog).
promtool -> str: the promtool binary.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rce_lib.metrics import catalog
from rce_lib.metrics.promql import recorded_labels, series_labels

# The helper module next to this file, importable whatever pytest's import mode is.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _paths import RULES_FILE


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: scripts/bootstrap.sh installs Debian's `prometheus` package "
            "(apt-get install --no-install-recommends prometheus), which has it"
        )
    return found


@pytest.fixture(scope="session")
def rule_groups() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES_FILE.read_text())
    groups = loaded["groups"]
    assert isinstance(groups, list) and groups
    return groups


@pytest.fixture(scope="session")
def alert_rules(rule_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in rule_groups for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="session")
def recording_rules(rule_groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rules = [rule for group in rule_groups for rule in group["rules"] if "record" in rule]
    by_name = {rule["record"]: rule for rule in rules}
    assert len(by_name) == len(rules), "a recording rule is defined twice"
    return by_name


@pytest.fixture(scope="session")
def known_series(recording_rules: dict[str, dict[str, Any]]) -> dict[str, frozenset[str]]:
    known = series_labels()
    for name, rule in recording_rules.items():
        known[name] = recorded_labels(rule["expr"], known, rule.get("labels", {}))
    return known


@pytest.fixture(scope="session")
def bounded_values() -> dict[str, frozenset[str]]:
    return {
        "outcome": frozenset(o.value for o in catalog.Outcome),
        "phase": catalog.PHASES,
        "reason": catalog.REASONS | {catalog.NONE, catalog.OTHER},
        "decision": catalog.GATE_DECISION_VALUES,
        "result": catalog.WAVE_RESULTS | {catalog.OTHER},
        "by": catalog.HELD_BY,
        "state": catalog.SDDC_STATES,
        "status": catalog.STATUSES,
        "kind": catalog.DRIFT_KINDS | {catalog.OTHER},
        "repair": catalog.DRIFT_REPAIRS | {catalog.OTHER},
        "service": catalog.SERVICES,
        "status_class": catalog.STATUS_CLASSES,
        "code": catalog.THROTTLE_CODES,
    }
