"""The monitoring services of docker-compose.yaml, checked without Docker: the exporter reads
the ledger airflow-init names; Prometheus' config is valid as the container sees it (promtool,
through the compose file's own mounts) and scrapes the exporter; Grafana's provisioning finds
the datasource and the dashboard through its mounts; no Grafana password is committed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from _compose import REPO, env_of, host_path, interpolate

PROMETHEUS_DIR = REPO / "include" / "prometheus"
GRAFANA_DIR = REPO / "include" / "grafana"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: scripts/bootstrap.sh installs Debian's `prometheus` package "
            "(apt-get install --no-install-recommends prometheus), which has it"
        )
    return found


def named_volumes(compose: dict[str, Any]) -> set[str]:
    return set(compose.get("volumes") or {})


def flag(args: list[str], name: str) -> str:
    """The value of `--name=value` in a command line."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} in {args}"
    return values[0]


def test_the_exporter_reads_the_ledger_that_airflow_init_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    exporter = services["rce-exporter"]
    assert exporter["entrypoint"][:2] == ["rce", "exporter"]
    env = env_of(exporter)
    # a distributed executor makes the ledger lookup refuse a local SQLite fallback
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    exported = urlsplit(interpolate(env["AIRFLOW_CONN_RCE_STATE"]))
    init = interpolate(services["airflow-init"]["command"][1])
    named = re.search(r'airflow connections add rce_state\s*\\?\s*--conn-uri "([^"]+)"', init)
    assert named is not None
    created = urlsplit(named.group(1))
    assert (exported.scheme, exported.hostname, exported.port, exported.path, exported.username) == (
        created.scheme,
        created.hostname,
        created.port,
        created.path,
        created.username,
    )
    assert exported.password == "<POSTGRES_PASSWORD>", "the password comes from .env, never committed"
    assert exporter["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_prometheus_config_is_valid_as_the_container_sees_it(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_in_container = flag(prometheus["command"], "config.file")
    config = host_path(prometheus, named_volumes(compose), config_in_container)
    assert config == PROMETHEUS_DIR / "prometheus.yml", config
    loaded = yaml.safe_load(config.read_text())
    for rule_file in loaded["rule_files"]:
        # relative to the config file: the same file in the repo and in the container
        assert not rule_file.startswith("/"), rule_file
        assert (config.parent / rule_file).is_file(), rule_file
    done = subprocess.run([promtool(), "check", "config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rce-alerts.yaml" in done.stdout


def test_prometheus_scrapes_the_exporter_service_on_its_port(compose: dict[str, Any]) -> None:
    loaded = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = [
        target
        for job in loaded["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    entrypoint = compose["services"]["rce-exporter"]["entrypoint"]
    port = entrypoint[entrypoint.index("--port") + 1]
    assert f"rce-exporter:{port}" in targets
    assert int(port) in compose["services"]["rce-exporter"]["expose"]


def test_grafana_provisioning_finds_the_datasource_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    named = named_volumes(compose)
    provisioning = host_path(grafana, named, "/etc/grafana/provisioning")
    assert provisioning == GRAFANA_DIR / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    url = urlsplit(source["url"])
    assert source["type"] == "prometheus" and url.hostname == "prometheus"
    assert url.port == 9090 and "prometheus" in compose["services"]
    providers = yaml.safe_load((provisioning / "dashboards" / "rce.yaml").read_text())["providers"]
    for provider in providers:
        folder = host_path(grafana, named, provider["options"]["path"])
        assert folder is not None and (folder / "rce-rollout.json").is_file(), provider
    home = host_path(grafana, named, env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == GRAFANA_DIR / "rce-rollout.json"


def test_grafana_admin_password_is_required_and_never_defaulted(compose: dict[str, Any]) -> None:
    env = env_of(compose["services"]["grafana"])
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]*\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    example = (REPO / ".env.example").read_text()
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", example, re.M)


def test_monitoring_images_are_pinned_to_a_release(compose: dict[str, Any]) -> None:
    for name, pattern in (
        ("prometheus", r"prom/prometheus:v\d+\.\d+\.\d+"),
        ("grafana", r"grafana/grafana-oss:\d+\.\d+\.\d+"),
    ):
        assert re.fullmatch(pattern, compose["services"][name]["image"]), name


def test_exporter_healthcheck_asks_the_port_it_serves(compose: dict[str, Any]) -> None:
    exporter = compose["services"]["rce-exporter"]
    port = exporter["entrypoint"][exporter["entrypoint"].index("--port") + 1]
    check = " ".join(shlex.quote(part) for part in exporter["healthcheck"]["test"])
    assert f"localhost:{port}/metrics" in check
