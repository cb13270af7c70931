"""Debian's real Prometheus scrapes `rce exporter` while a wave runs (a bad release, stopped at
the canary), and evaluates the shipped alert rules: checked through Prometheus's HTTP API."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rce_lib.devenv.processes import Group, free_port, start_exporter, start_group
from tests.dags.test_wave_dags_test import BAD_BULK, BAD_CANARY, FLEET_SIZE, PLAN, TARGET, TIME_SCALE
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "include" / "prometheus" / "rce-alerts.yaml"
WAVE = "canary_bad"


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("query", query=expr)["result"])

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for alert in self.get("alerts")["alerts"]:
            out.setdefault(alert["labels"]["alertname"], []).append(alert)
        return out


@pytest.fixture(scope="module")
def live(
    module_sim_factory: Any, module_wave_airflow: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is not installed (scripts/bootstrap.sh installs it)"
    root = tmp_path_factory.mktemp("prom")
    sim = module_sim_factory(size=FLEET_SIZE, time_scale=TIME_SCALE)
    sim.faults(degraded_release=TARGET, degraded_error_rate=0.03)
    af = module_wave_airflow(sim, PLAN)
    ledger_url = f"sqlite:///{af.home}/rce_ledger.db"
    exporter_port, prom_port = free_port(), free_port()
    groups: list[Group] = []
    config = root / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "rce", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
                ],
            }
        )
    )
    try:
        groups.append(
            start_exporter(
                exporter_port,
                ledger_url,
                env={**af.local.env(), "RCE_PHASE_MAX_SECONDS": json.dumps({"upgrade_hosts": 0.5})},
                log_path=root / "exporter.log",
            )
        )
        groups.append(
            start_group(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                env={"PATH": "/usr/bin:/bin"},
                log_path=root / "prometheus.log",
            )
        )
        prom = Prom(prom_port)

        def ready() -> bool:
            try:
                targets = prom.get("targets")["activeTargets"]
            except OSError:
                return False
            return any(t["health"] == "up" for t in targets)

        wait_until("Prometheus scraping the exporter", ready, timeout=60)
        seen_running: list[float] = []

        def during() -> None:  # sample while the wave runs: the in-flight gauges move
            for row in prom.query('sum(rce_sddcs{state="running"})'):
                seen_running.append(float(row["value"][1]))

        proc_holder: dict[str, Any] = {}
        from threading import Thread

        runner = Thread(target=lambda: proc_holder.setdefault("proc", af.dags_test(WAVE, {})))
        runner.start()
        while runner.is_alive():
            during()
            time.sleep(1)
        runner.join()
        yield {
            "prom": prom,
            "af": af,
            "sim": sim,
            "proc": proc_holder["proc"],
            "running": seen_running,
            "logs": groups,
        }
    finally:
        for group in groups:
            print(f"----- {group.name} -----\n{group.log_tail(30)}")
            group.stop()


def test_series_reach_prometheus_with_bounded_labels(live: dict[str, Any]) -> None:
    prom: Prom = live["prom"]
    assert live["proc"].returncode != 0  # the gate stopped the wave
    wait_until(
        "the wave's result in Prometheus",
        lambda: prom.query(f'rce_wave_runs_total{{wave="{WAVE}",result="CANARY_GATE_FAILED"}} == 1'),
        timeout=30,
    )
    assert prom.query(f'rce_gate_decisions_total{{wave="{WAVE}",decision="fail"}} >= 1')
    done = prom.query(f'rce_phase_total{{wave="{WAVE}",phase="postcheck",outcome="succeeded"}}')
    assert sum(float(r["value"][1]) for r in done) == len(BAD_CANARY)
    rolled = prom.query(f'rce_sddcs{{wave="{WAVE}",state="rolled_back"}}')
    assert [float(r["value"][1]) for r in rolled] == [len(BAD_CANARY)]
    nsx = wait_until(
        "downstream request counters",
        lambda: prom.query('sum(rce_downstream_requests_total{service="nsx",status_class="2xx"})'),
        timeout=30,
    )
    assert float(nsx[0]["value"][1]) >= len(BAD_CANARY)
    assert prom.query(
        "histogram_quantile(0.95, sum by (le) (rate(rce_downstream_request_duration_seconds_bucket[5m])))"
    )
    assert prom.query(f'rce_phase_duration_seconds_count{{wave="{WAVE}",phase="upgrade_hosts"}} > 0')
    assert max(live["running"], default=0) >= 1, "never saw an SDDC running while the wave ran"
    for label in ("sddc_id", "sddc", "host_id", "task_id"):
        assert prom.get("label/" + label + "/values") == []
    bulk_started = prom.query(f'rce_phase_total{{wave="{WAVE}",phase="precheck"}}')
    assert sum(float(r["value"][1]) for r in bulk_started) == len(BAD_CANARY), BAD_BULK


def test_alert_rules_evaluate_against_the_live_series(live: dict[str, Any]) -> None:
    prom: Prom = live["prom"]
    rules = prom.get("rules")["groups"]
    assert rules and all(r.get("health") == "ok" for g in rules for r in g["rules"]), rules
    alerts = wait_until(
        "the canary alerts",
        lambda: (a := prom.alerts()) and {"RceCanaryGateFailed", "RceWaveFailed"} <= set(a) and a,
        timeout=60,
    )
    assert alerts["RceCanaryGateFailed"][0]["labels"]["wave"] == WAVE
    assert alerts["RceWaveFailed"][0]["labels"]["wave"] == WAVE
    assert "RceLedgerDown" not in alerts
    assert "RceDriftNeedsHuman" not in alerts
    for firing in alerts.values():
        assert firing[0]["annotations"]["runbook_url"]
