"""The Grafana dashboard (include/grafana/rce-rollout.json): a sane dashboard model (unique
panel ids, a datasource and targets on every panel, a grid without overlaps), its datasource
a template variable, and every query naming only metrics the exporter serves
(rce_lib/metrics/catalog.py) or recording rules of include/prometheus/rce-alerts.yaml, with
labels and label values those metrics have, filtered by the `wave` variable wherever the
metric has a wave."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from _paths import DASHBOARD_FILE

from rce_lib.metrics.promql import parse, problems

GRID_COLUMNS = 24
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows too (rows themselves left out)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def query_problems(
    dashboard: Mapping[str, Any], known: Mapping[str, frozenset[str]], values: Mapping[str, frozenset[str]]
) -> list[str]:
    """Every query problem of the dashboard: unknown metrics or labels, impossible label
    values, a wave-labelled metric not filtered by `$wave`, an undefined variable."""
    defined = set(variables(dashboard)) | {"__rate_interval", "__interval", "__range", "__range_s"}
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr, where = target["expr"], f"panel {panel['id']} ({panel['title']}) {target['refId']}"
            found += [f"{where}: {issue}" for issue in problems(expr, known, values)]
            for name in set(re.findall(r"\$\{?(\w+)", expr)) - defined:
                found.append(f"{where}: undefined variable ${name}")
            if found:
                continue
            for selector in parse(expr).selectors:
                filtered = any(m.label == "wave" and m.value == "$wave" for m in selector.matchers)
                if "wave" in known[str(selector.metric)] and not filtered:
                    found.append(f'{where}: {selector.metric} is not filtered by wave=~"$wave"')
    return found


# ----------------------------------------------------------------------------- structure


def test_dashboard_has_a_stable_uid_title_and_recent_schema(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "rce-rollout" and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert "id" not in dashboard or dashboard["id"] is None, "provisioned dashboards carry no database id"


def test_panel_ids_are_unique_and_every_panel_queries_prometheus(dashboard: dict[str, Any]) -> None:
    every = list(panels(dashboard))
    assert len(every) >= 12
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), ids
    for panel in every:
        assert panel["title"] and panel["datasource"] == DATASOURCE, panel["id"]
        targets = panel["targets"]
        assert targets, f"panel {panel['id']} has no query"
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), panel["id"]
        for target in targets:
            assert target["expr"].strip() and target.get("datasource", DATASOURCE) == DATASOURCE


def test_panels_sit_on_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        x, y, w, h = (pos[k] for k in ("x", "y", "w", "h"))
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["id"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= GRID_COLUMNS, panel["id"]
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            assert cell not in taken, f"panels {taken[cell]} and {panel['id']} overlap"
            taken[cell] = panel["id"]


def test_datasource_and_wave_are_template_variables(dashboard: dict[str, Any]) -> None:
    found = variables(dashboard)
    source = found["DS_PROMETHEUS"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    wave = found["wave"]
    assert wave["type"] == "query" and wave["datasource"] == DATASOURCE
    assert wave["definition"] == "label_values(rce_sddcs, wave)"
    assert wave["query"]["query"] == wave["definition"]
    assert wave["multi"] and wave["includeAll"] and wave["allValue"] == ".*"
    exprs = [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]
    assert any('wave=~"$wave"' in expr for expr in exprs)


def test_the_wave_variable_reads_a_catalog_metric_with_a_wave_label(
    dashboard: dict[str, Any], known_series: dict[str, frozenset[str]]
) -> None:
    match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variables(dashboard)["wave"]["definition"])
    assert match is not None
    assert match.group(2) in known_series[match.group(1)]


# ------------------------------------------------------------------------------- queries


def test_every_query_names_real_metrics_labels_and_values_and_filters_by_wave(
    dashboard: dict[str, Any],
    known_series: dict[str, frozenset[str]],
    bounded_values: dict[str, frozenset[str]],
) -> None:
    assert query_problems(dashboard, known_series, bounded_values) == []


def test_the_dashboard_shows_every_metric_of_the_catalog(
    dashboard: dict[str, Any], known_series: dict[str, frozenset[str]], recording_rules: dict[str, Any]
) -> None:
    shown: set[str] = set()
    for panel in panels(dashboard):
        for target in panel["targets"]:
            for metric in parse(target["expr"]).metrics:
                rule = recording_rules.get(metric)
                shown |= parse(rule["expr"]).metrics if rule else {metric}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}
    catalog = {name for name in known_series if name not in recording_rules}
    missing = {
        name
        for name in catalog
        if name not in shown and re.sub(r"_(bucket|sum|count)$", "", name) not in families
    }
    assert sorted(missing) == []


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ('sum(rate(rce_made_up_total{wave=~"$wave"}[5m]))', "unknown metric rce_made_up_total"),
        ("rce:not_recorded:ratio5m", "unknown metric rce:not_recorded:ratio5m"),
        ('sum by (service) (rate(rce_downstream_requests_total{wave=~"$wave"}[5m]))', "has no label wave"),
        ('sum(rce_sddcs{wave=~"$wave", state="finished"})', "state='finished'"),
        ("sum by (state) (rce_sddcs)", 'not filtered by wave=~"$wave"'),
        ('sum(rce_sddcs{wave=~"$wave"}) / $nope', "undefined variable $nope"),
    ],
)
def test_a_broken_query_is_caught(
    dashboard: dict[str, Any],
    known_series: dict[str, frozenset[str]],
    bounded_values: dict[str, frozenset[str]],
    expr: str,
    complaint: str,
) -> None:
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["targets"].append({"refId": "Z", "datasource": DATASOURCE, "expr": expr})
    found = query_problems(broken, known_series, bounded_values)
    assert found and all("Z:" in issue for issue in found), found
    assert any(complaint in issue for issue in found), found
