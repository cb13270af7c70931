"""Where the observability assets live (imported by the tests; conftest.py puts this
directory on sys.path, whatever pytest's import mode)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "include" / "prometheus" / "rce-alerts.yaml"
RULE_TESTS_DIR = REPO / "include" / "prometheus" / "tests"
DASHBOARD_FILE = REPO / "include" / "grafana" / "rce-rollout.json"
RUNBOOKS_DIR = REPO / "docs" / "runbooks"
