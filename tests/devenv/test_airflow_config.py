"""[core] max_map_length is the same, and large enough, in every Airflow config the project ships:
the local environment (demo, bench, tests), docker-compose.yaml and the README's Helm values. A
wave maps one task group instance per SDDC, so it bounds the largest wave (issue 6: N = 1000)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rce_lib.devenv.airflow_local import MAX_MAP_LENGTH, LocalAirflow

REPO = Path(__file__).resolve().parents[2]
LARGEST_BENCH_WAVE = 1000


def test_max_map_length_leaves_room_for_the_largest_benchmark_wave() -> None:
    assert MAX_MAP_LENGTH >= 2048 > LARGEST_BENCH_WAVE


def test_local_airflow_sets_it(tmp_path: Path) -> None:
    env = LocalAirflow(home=tmp_path, sim_url="http://127.0.0.1:1", sim_token="t").env()
    assert env["AIRFLOW__CORE__MAX_MAP_LENGTH"] == str(MAX_MAP_LENGTH)


def test_compose_sets_the_same_value_for_every_airflow_service() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    common = compose["x-airflow-common"]["environment"]
    assert str(common["AIRFLOW__CORE__MAX_MAP_LENGTH"]) == str(MAX_MAP_LENGTH)
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, dict) and "AIRFLOW__CORE__MAX_MAP_LENGTH" in env:
            assert str(env["AIRFLOW__CORE__MAX_MAP_LENGTH"]) == str(MAX_MAP_LENGTH), name


def test_readme_helm_values_set_the_same_value() -> None:
    text = (REPO / "README.md").read_text()
    values = re.findall(r"max_map_length: (\d+)", text)
    assert values and set(values) == {str(MAX_MAP_LENGTH)}
