"""A local Airflow for the demo, the benchmark and the tests: one AIRFLOW_HOME,
the repo's dags/ and plugins/, connections from environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rce_lib.devenv.processes import Group, free_port, kill_listeners, start_group

REPO_ROOT = Path(__file__).resolve().parents[2]
#: imported by every Airflow process from $AIRFLOW_HOME/config (rce_lib.airflow_support.preload)
LOCAL_SETTINGS = REPO_ROOT / "config" / "airflow_local_settings.py"


def tool_home(home: Path | None, *, tool: str, label: str) -> Path:
    """A fresh AIRFLOW_HOME for `rce <tool>` (default var/<tool>/<label>-<time>). A non-empty
    directory is wiped only if an earlier run of the same tool made it (its marker file)."""
    import shutil
    import time

    from rce_lib.cli import CommandError

    marker = f".rce-{tool}-home"
    if home is None:
        home = REPO_ROOT / "var" / tool / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    home = home.resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / marker).exists():
            raise CommandError(f"{home} is not empty and not a {tool} home; give a fresh --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / marker).write_text(f"created by rce {tool}; wiped by the next run with this --home\n")
    return home


API_PORT = 8080
#: [core] max_map_length: a wave maps one task group instance per SDDC, so this bounds the
#: largest wave; a wider one fails at expansion. Airflow's default (1024) leaves almost no room
#: over the 1,000-SDDC benchmark wave. The same value in docker-compose.yaml and the README's
#: Helm values (tests/devenv/test_airflow_config.py keeps them equal).
MAX_MAP_LENGTH = 2048


def install_local_settings(home: Path) -> Path:
    """Put the project's airflow_local_settings.py in $AIRFLOW_HOME/config, where Airflow looks
    (as the Docker image and docker-compose.yaml do)."""
    import shutil

    target = home / "config" / LOCAL_SETTINGS.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LOCAL_SETTINGS, target)
    return target


def venv_bin() -> Path:
    return Path(sys.executable).parent


def sddc_api_conn(url: str, token: str) -> str:
    """AIRFLOW_CONN_SDDC_API in Airflow's JSON form; the token goes in the (masked) password."""
    scheme, rest = url.split("://", 1)
    hostport = rest.rstrip("/")
    host, _, port = hostport.partition(":")
    conn = {
        "conn_type": "http",
        "host": host,
        "port": int(port) if port else None,
        "schema": scheme,
        "password": token,
        "extra": {"connect_timeout": 5, "read_timeout": 30},
    }
    return json.dumps(conn)


@dataclass
class LocalAirflow:
    """Environment and lifecycle of a local Airflow (standalone or single components).

    Ports default to free ones, so tests and benchmarks can run beside each other
    and beside the demo (which asks for 8080 explicitly).
    """

    home: Path
    sim_url: str
    sim_token: str
    api_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_log_port: int = field(default_factory=free_port)
    trigger_log_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        install_local_settings(self.home)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__PARALLELISM": "64",
                "AIRFLOW__CORE__MAX_MAP_LENGTH": str(MAX_MAP_LENGTH),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
                "AIRFLOW__API__BASE_URL": f"http://localhost:{self.api_port}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{self.api_port}/execution/",
                # On 2 cores, standalone's SQLite-backed execution API answers in tens of seconds
                # when a wave's task processes all start at once; Airflow's 5 s client timeout and
                # 15 connections then fail healthy tasks (they are retried, at a worker run each).
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "30",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW_CONN_SDDC_API": sddc_api_conn(self.sim_url, self.sim_token),
                "RCE_INCLUDE_DIR": str(REPO_ROOT / "include"),
                "PYTHONUNBUFFERED": "1",
                "NO_PROXY": "*",
                "no_proxy": "*",
            }
        )
        env.update(self.extra_env)
        return env

    def airflow(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv_bin() / "airflow"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def prepare(self) -> None:
        """Migrate the metadata DB and create the pools (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate")
        self.airflow("pools", "import", str(REPO_ROOT / "include" / "pools.json"))

    def start_standalone(self) -> Group:
        kill_listeners(self.api_port)
        return start_group(
            "airflow-standalone",
            [str(venv_bin() / "airflow"), "standalone"],
            env=self.env(),
            log_path=self.home / "logs" / "standalone.log",
        )

    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def password(self, user: str = "admin", timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return str(json.loads(self.password_file().read_text())[user])
            except (OSError, ValueError, KeyError):
                time.sleep(0.5)
        raise TimeoutError(f"no password for {user} in {self.password_file()}")
