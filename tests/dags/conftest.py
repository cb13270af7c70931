"""Airflow fixtures for the DAG tests.

  airflow_template_home (session) -> Path: an AIRFLOW_HOME migrated once with
      LocalAirflow.prepare() (db migrate + pools import, ~12 s).
  wave_airflow(plan_yaml=..., home=...) -> WaveAirflow factory: a fresh copy of that
      home (own metadata DB, own ledger) wired to a simulator and a rollout plan.

WaveAirflow.dags_test(wave, conf) runs `airflow dags test rce_wave_<wave> -c <json>` as a
subprocess with LocalAirflow.env(): the command the README documents.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from rce_lib.devenv.airflow_local import LocalAirflow, venv_bin
from rce_lib.ledger import Ledger

DAGS_TEST_TIMEOUT_S = 300


class _Sim(Protocol):
    url: str
    token: str


@pytest.fixture(scope="session")
def airflow_template_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated AIRFLOW_HOME with the pools imported; copied, never used directly."""
    home = tmp_path_factory.mktemp("airflow-template") / "home"
    LocalAirflow(home=home, sim_url="http://127.0.0.1:9", sim_token="unused").prepare()
    return home


@dataclass
class WaveAirflow:
    """A private copy of the prepared Airflow home, pointed at one simulator and one plan."""

    local: LocalAirflow
    plan_path: Path
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.local.home

    def dags_test(
        self,
        wave: str,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = DAGS_TEST_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """`airflow dags test rce_wave_<wave> -c '<json>'` in a subprocess; never raises on failure.
        `env` adds variables (e.g. AIRFLOW_VAR_RCE_KILL_SWITCH) to this run only."""
        return self.dag_test(f"rce_wave_{wave}", conf, env=env, timeout=timeout)

    def dag_test(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = DAGS_TEST_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """`airflow dags test <dag_id> -c '<json>'` in a subprocess; never raises on failure."""
        args = [str(venv_bin() / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf or {})]
        started = time.monotonic()
        proc = subprocess.run(
            args,
            env={**self.local.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
        elapsed = time.monotonic() - started
        self.timings.append((f"{dag_id} {json.dumps(conf or {})}", elapsed))
        print(f"airflow dags test {dag_id} {conf or {}}: exit {proc.returncode} in {elapsed:.1f} s")
        self.runs.append(proc)
        return proc

    def ledger(self) -> Ledger:
        """The ledger the tasks wrote: the SQLite default under $AIRFLOW_HOME."""
        path = self.home / "rce_ledger.db"
        assert path.exists(), f"no ledger at {path}"
        return Ledger(f"sqlite:///{path}")


WaveAirflowFactory = Callable[..., WaveAirflow]


def _make_factory(template: Path, base: Path) -> WaveAirflowFactory:
    made: list[int] = []

    def make(sim: _Sim, plan_yaml: str) -> WaveAirflow:
        n = len(made)
        made.append(n)
        root = base / f"airflow-{n}"
        root.mkdir(parents=True)
        home = root / "home"
        shutil.copytree(template, home, ignore=shutil.ignore_patterns("logs"))
        # airflow.cfg spells out the template's paths (sql_alchemy_conn, logs, dags): point them here
        cfg = home / "airflow.cfg"
        cfg.write_text(cfg.read_text().replace(str(template), str(home)))
        plan_path = root / "rollout.yaml"
        plan_path.write_text(plan_yaml)
        local = LocalAirflow(
            home=home,
            sim_url=sim.url,
            sim_token=sim.token,
            extra_env={"RCE_ROLLOUT_PLAN": str(plan_path)},
        )
        return WaveAirflow(local=local, plan_path=plan_path)

    return make


@pytest.fixture
def wave_airflow(airflow_template_home: Path, tmp_path: Path) -> WaveAirflowFactory:
    """wave_airflow(sim, plan_yaml) -> WaveAirflow on a fresh copy of the prepared home."""
    return _make_factory(airflow_template_home, tmp_path)


@pytest.fixture(scope="module")
def module_wave_airflow(
    airflow_template_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WaveAirflowFactory]:
    """Like wave_airflow, for module-scoped fixtures."""
    yield _make_factory(airflow_template_home, tmp_path_factory.mktemp("module-airflow"))
