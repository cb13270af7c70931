"""The alert rules (include/prometheus/rce-alerts.yaml): promtool accepts them and their unit
tests pass; every alert is unit-tested firing and not firing, carries severity, summary,
description and a runbook in this repository that names it; every rule names only metrics the
exporter serves (rce_lib/metrics/catalog.py) or recording rules of the file, with labels and
label values those metrics have. Also the PromQL reader that these checks rely on."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from typing import Any

import pytest
import yaml
from _paths import REPO, RULE_TESTS_DIR, RULES_FILE, RUNBOOKS_DIR

from rce_lib.metrics.promql import PromQLError, parse, problems, series_labels

SEVERITIES = {"page", "ticket"}
RUNBOOKS = RUNBOOKS_DIR
RUNBOOK_URL = re.compile(r"docs/runbooks/[a-z0-9-]+\.md")


def rule_tests() -> list[tuple[str, dict[str, Any]]]:
    files = sorted(RULE_TESTS_DIR.glob("*.yaml"))
    assert files, f"no promtool unit tests in {RULE_TESTS_DIR}"
    return [(path.name, yaml.safe_load(path.read_text())) for path in files]


# ---------------------------------------------------------------------------------- promtool


def test_promtool_accepts_the_rule_file(promtool: str) -> None:
    done = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    files = [str(RULE_TESTS_DIR / name) for name, _ in rule_tests()]
    done = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_every_unit_test_file_loads_the_rule_file() -> None:
    for name, tests in rule_tests():
        resolved = [(RULE_TESTS_DIR / f).resolve() for f in tests["rule_files"]]
        assert resolved == [RULES_FILE], name


def test_every_alert_is_unit_tested_firing_and_not_firing(alert_rules: list[dict[str, Any]]) -> None:
    fires: dict[str, int] = defaultdict(int)
    quiet: dict[str, int] = defaultdict(int)
    for _, tests in rule_tests():
        for test in tests["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fires[case["alertname"]] += 1
                    for alert in case["exp_alerts"]:  # labels and annotations are checked exactly
                        assert "severity" in alert["exp_labels"] and alert.get("exp_annotations"), case
                else:
                    quiet[case["alertname"]] += 1
    names = {rule["alert"] for rule in alert_rules}
    assert set(fires) <= names and set(quiet) <= names, "a test names an alert that does not exist"
    assert sorted(names - set(fires)) == [], "alerts never tested firing"
    assert sorted(names - set(quiet)) == [], "alerts never tested staying quiet"


def test_every_recording_rule_is_unit_tested(recording_rules: dict[str, dict[str, Any]]) -> None:
    tested = {
        case["expr"]
        for _, tests in rule_tests()
        for test in tests["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert sorted(set(recording_rules) - tested) == []


# ------------------------------------------------------------------- labels and annotations


def test_every_alert_has_severity_summary_description_and_runbook(alert_rules: list[dict[str, Any]]) -> None:
    for rule in alert_rules:
        name = rule["alert"]
        assert re.fullmatch(r"Rce[A-Z][A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert re.search(r"\$(labels|value)", annotations["description"]), f"{name}: say which and how much"


def test_every_runbook_url_is_a_runbook_in_the_repo_that_names_its_alert(
    alert_rules: list[dict[str, Any]],
) -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for rule in alert_rules:
        name, url = rule["alert"], rule["annotations"]["runbook_url"]
        assert RUNBOOK_URL.fullmatch(url), f"{name}: {url} is not a runbook path of this repo"
        page = REPO / url
        assert page.is_file(), f"{name}: {url} does not exist"
        assert name in page.read_text(), f"{name}: {url} does not mention it"
        assert name in index and f"({page.name})" in index, f"{name}: not in docs/runbooks/README.md"


def test_every_runbook_page_belongs_to_an_alert(alert_rules: list[dict[str, Any]]) -> None:
    linked = {REPO / rule["annotations"]["runbook_url"] for rule in alert_rules}
    pages = set(RUNBOOKS.glob("*.md")) - {RUNBOOKS / "README.md"}
    assert sorted(p.name for p in pages - linked) == []


def test_runbook_links_between_pages_resolve() -> None:
    for page in RUNBOOKS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).resolve().is_file(), f"{page.name}: {target}"


# ------------------------------------------------------------------- metrics, labels, values


def test_every_rule_names_only_catalog_metrics_or_recording_rules(
    rule_groups: list[dict[str, Any]],
    known_series: dict[str, frozenset[str]],
    bounded_values: dict[str, frozenset[str]],
) -> None:
    found = {
        rule.get("alert") or rule["record"]: problems(rule["expr"], known_series, bounded_values)
        for group in rule_groups
        for rule in group["rules"]
    }
    assert {name: issues for name, issues in found.items() if issues} == {}


def test_recording_rules_are_named_rce_level_metric_operation(
    recording_rules: dict[str, dict[str, Any]],
) -> None:
    for name in recording_rules:
        assert re.fullmatch(r"rce:[a-z0-9_]+:[a-z0-9_]+", name), name
        assert name not in series_labels(), f"{name} shadows an exported metric"


# ------------------------------------------------------------------------ the PromQL reader

KNOWN = series_labels()


@pytest.mark.parametrize(
    ("expr", "metrics"),
    [
        ('sum by (wave) (rate(rce_phase_total{outcome="failed"}[5m]))', {"rce_phase_total"}),
        ("rce_ledger_up", {"rce_ledger_up"}),
        ("(min(rce_ledger_up) == 0) or absent(rce_ledger_up)", {"rce_ledger_up"}),
        (
            "max by (wave, phase) (rce_phase_oldest_running_seconds)\n"
            "  > on (phase) group_left () max by (phase) (rce_phase_max_seconds)",
            {"rce_phase_oldest_running_seconds", "rce_phase_max_seconds"},
        ),
        (
            'rce_wave_runs_total{result!="promoted"} unless rce_wave_runs_total offset 1h30m',
            {"rce_wave_runs_total"},
        ),
        (  # a subquery, a scalar, a number with an exponent, a bool modifier
            "max_over_time(rate(rce_drift_total[5m])[1h:1m]) > bool 1e-3 * scalar(rce_ledger_up)",
            {"rce_drift_total", "rce_ledger_up"},
        ),
        (  # Grafana variables anywhere; label names inside strings are not metrics
            "histogram_quantile(0.95, sum(rate("
            'rce_downstream_request_duration_seconds_bucket{service=~"$svc"}[$__rate_interval])) by (le))',
            {"rce_downstream_request_duration_seconds_bucket"},
        ),
        ('label_replace(rce_sddcs, "rce_fake_total", "$1", "wave", "(.*)")', {"rce_sddcs"}),
        (
            "sum without (instance, job) (rce_sddcs) * on () group_left rce_ledger_up",
            {"rce_sddcs", "rce_ledger_up"},
        ),
        ("rce:phase_failed:ratio15m > 0.2", {"rce:phase_failed:ratio15m"}),
        ('{__name__="rce_sddcs", wave="canary"}', {"rce_sddcs"}),
        ("vector(1) + time()", set()),
    ],
)
def test_reader_finds_the_metric_names(expr: str, metrics: set[str]) -> None:
    assert parse(expr).metrics == metrics


def test_reader_tells_labels_from_metrics() -> None:
    query = parse('sum by (wave, phase) (rce_phase_total{outcome="failed", reason!~"KILL.*"}) > on (wave) x')
    assert query.grouping == ("wave", "phase", "wave")
    (selector, bare) = query.selectors
    assert selector.labels == {"outcome", "reason"} and [m.op for m in selector.matchers] == ["=", "!~"]
    assert bare.metric == "x" and not bare.matchers
    assert query.functions == ("sum",)


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("rate(rce_phase_totl[5m])", "unknown metric rce_phase_totl"),
        ("sum by (wave) (rce_made_up_seconds) / rce_sddcs", "unknown metric rce_made_up_seconds"),
        ('rce_downstream_requests_total{wave="canary"}', "rce_downstream_requests_total has no label wave"),
        ("sum by (sddc_id) (rce_sddcs)", "label sddc_id"),
        ('rate(rce_phase_duration_seconds_sum{le="1"}[5m])', "has no label le"),
        ("rce_phase_total_rate(rce_phase_total[5m])", "unknown function rce_phase_total_rate()"),
        ('sum(rce_sddcs{wave="a"', "unclosed {"),
        ("rce_sddcs[5m", "unclosed ["),
        ("rce_sddcs ; rce_ledger_up", "unexpected character ';'"),
        ('{wave="canary"}', "without a metric name"),
    ],
)
def test_reader_reports_what_is_wrong(expr: str, complaint: str) -> None:
    found = problems(expr, KNOWN)
    assert any(complaint in issue for issue in found), found


def test_reader_accepts_good_expressions_and_checks_label_values() -> None:
    assert (
        problems("histogram_quantile(0.9, sum by (le) (rate(rce_phase_duration_seconds_bucket[5m])))", KNOWN)
        == []
    )
    assert problems('up{job="rce"} * 0 + rce_sddcs{job="rce"}', {**KNOWN, "up": frozenset()}) == []
    values = {"outcome": frozenset({"succeeded", "failed", "skipped"})}
    assert problems('rce_phase_total{outcome="failed"}', KNOWN, values) == []
    assert problems('rce_phase_total{outcome=~"fail.*", outcome!="$o"}', KNOWN, values) == []
    assert problems('rce_phase_total{outcome="failure"}', KNOWN, values) == [
        "outcome='failure': outcome never takes it"
    ]


def test_reader_raises_on_unreadable_input() -> None:
    with pytest.raises(PromQLError, match="malformed label matcher"):
        parse('rce_sddcs{wave>"x"}')
