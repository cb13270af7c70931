"""Airflow's distributed topology as separate local processes: the shape of
docker-compose.yaml without Docker, for the integration test and for trying it by hand.

PostgreSQL holds Airflow's metadata DB and the ledger (fresh, uniquely named
databases that `drop()` removes); Redis is the Celery broker, on a DB number of
its own with a key prefix and queue unique to this run, so that runs on one
machine never take each other's tasks. Each component (api-server, scheduler,
dag-processor, triggerer, every Celery worker) is its own process group on free
ports, so one can be killed (`kill_worker`) and all are always stopped (`stop`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from rce_lib.devenv.airflow_local import REPO_ROOT, LocalAirflow, venv_bin
from rce_lib.devenv.processes import Group, descendants, free_port, kill_listeners, start_group, stop_group

PG_SERVER = "postgres@127.0.0.1:5432"
REDIS_SERVER = "127.0.0.1:6379"
# A Redis DB number of its own: other tools on this machine use DB 0.
REDIS_DB = 11
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def create_database(name: str, server: str = PG_SERVER) -> str:
    """Create an empty PostgreSQL database; returns its SQLAlchemy URL (psycopg2)."""
    admin = create_engine(f"postgresql+psycopg2://{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"postgresql+psycopg2://{server}/{name}"


def drop_database(name: str, server: str = PG_SERVER) -> None:
    """Drop a database even while stray sessions still hold it (WITH FORCE, PostgreSQL 13+)."""
    admin = create_engine(f"postgresql+psycopg2://{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def delete_redis_keys(prefix: str, db: int = REDIS_DB, server: str = REDIS_SERVER) -> int:
    """Delete this run's broker keys (and only those); returns how many."""
    import redis

    host, port = server.split(":")
    client = redis.Redis(host=host, port=int(port), db=db)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        deleted: Any = client.delete(*keys) if keys else 0
        return int(deleted)
    finally:
        client.close()


def _started(pid: int) -> str | None:
    """A process's start time (/proc), to tell it from a later process given the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class DistributedAirflow:
    """One Airflow deployment on PostgreSQL + Redis + CeleryExecutor, one process per component.

    `create()` makes the databases, `prepare()` migrates and imports the pools,
    `start()` starts every component and `workers` Celery workers; `stop()` stops
    them and `drop()` removes the databases and broker keys. Use as a context
    manager to get all of that undone whatever happens.
    """

    home: Path
    sim_url: str
    sim_token: str
    workers: int = 2
    worker_concurrency: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    redis_db: int = REDIS_DB
    groups: dict[str, Group] = field(default_factory=dict, init=False)
    _created: list[str] = field(default_factory=list, init=False, repr=False)
    _secrets: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _local: LocalAirflow | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ naming

    @property
    def metadata_db(self) -> str:
        return f"rce_it_airflow_{self.run_tag}"

    @property
    def ledger_db(self) -> str:
        return f"rce_it_ledger_{self.run_tag}"

    @property
    def queue(self) -> str:
        return f"rce-{self.run_tag}"

    @property
    def key_prefix(self) -> str:
        return f"rce-{self.run_tag}:"

    @property
    def ledger_url(self) -> str:
        return f"postgresql+psycopg2://{PG_SERVER}/{self.ledger_db}"

    @property
    def local(self) -> LocalAirflow:
        """The single-host environment (paths, simulator connection, ports), extended below."""
        if self._local is None:
            if not self._secrets:
                self._secrets = {"fernet": fernet_key(), "jwt": secrets.token_urlsafe(32)}
            self._local = LocalAirflow(
                home=self.home, sim_url=self.sim_url, sim_token=self.sim_token, extra_env=self._env()
            )
        return self._local

    @property
    def api_url(self) -> str:
        return f"http://localhost:{self.local.api_port}"

    def _env(self) -> dict[str, str]:
        pg = f"postgresql+psycopg2://{PG_SERVER}"
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{pg}/{self.metadata_db}",
            # No async PostgreSQL driver (asyncpg) is locked: no async engine. Nothing this
            # deployment uses needs one (the official image ships asyncpg; compose keeps the default).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_SERVER}/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{pg}/{self.metadata_db}",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.key_prefix,
            # A killed worker's unacknowledged messages come back after this, not after 24 h.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "120",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
            "AIRFLOW__API__WORKERS": "1",
            # The DAG file does not change during a run: parse it once, not every 30 s.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW_CONN_RCE_STATE": f"postgresql://{PG_SERVER}/{self.ledger_db}",
            **self.extra_env,
        }

    # --------------------------------------------------------------- lifecycle

    def __enter__(self) -> DistributedAirflow:
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self.stop()
        finally:
            self.drop()

    def create(self) -> None:
        """Create the metadata and ledger databases (fresh, named after run_tag)."""
        for name in (self.metadata_db, self.ledger_db):
            create_database(name)
            self._created.append(name)

    def prepare(self) -> None:
        """What airflow-init does in docker-compose.yaml: migrate, then the pools."""
        if not self._created:
            self.create()
        self.home.mkdir(parents=True, exist_ok=True)
        for args in (("db", "migrate"), ("pools", "import", str(REPO_ROOT / "include" / "pools.json"))):
            done = self.local.airflow(*args, check=False)
            if done.returncode != 0:
                output = done.stdout[-2000:] + done.stderr[-4000:]
                raise RuntimeError(f"airflow {' '.join(args)} failed:\n{output}")

    def env(self) -> dict[str, str]:
        return self.local.env()

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Group:
        group = start_group(
            name,
            [str(venv_bin() / "airflow"), *argv],
            env=env or self.env(),
            log_path=self.home / "logs" / f"{name}.log",
        )
        self.groups[name] = group
        return group

    def start(self) -> None:
        """Every component as its own process group, then the workers."""
        kill_listeners(self.local.api_port)
        for component in COMPONENTS:
            self._start(component, [component])
        for i in range(1, self.workers + 1):
            self.start_worker(f"worker-{i}")

    def start_worker(self, name: str) -> Group:
        """A Celery worker on this run's queue, with its own log-server port and pid file."""
        env = self.env()
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        return self._start(
            name,
            [
                "celery",
                "worker",
                "--queues",
                self.queue,
                "--concurrency",
                str(self.worker_concurrency),
                "--celery-hostname",
                f"{name}-{self.run_tag}@%h",
                "--pid",
                str(self.home / f"{name}.pid"),
                "--without-mingle",
                "--without-gossip",
            ],
            env,
        )

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker's whole process group and its task processes, as a crashed host would."""
        self.groups[name].kill9()

    def dead(self) -> list[str]:
        """Components that exited on their own (the ones killed on purpose included)."""
        return [name for name, group in self.groups.items() if not group.alive()]

    def stop(self, timeout: float = 20.0) -> None:
        """TERM every component at once (they shut down in parallel), then stop each group
        within what is left of `timeout` (KILL for stragglers, and their strays)."""
        # Task processes may sit in process groups of their own: find them while their parents live.
        strays = {pid: _started(pid) for group in self.groups.values() for pid in descendants(group.pid)}
        for group in self.groups.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for group in reversed(list(self.groups.values())):
            stop_group(group.pid, timeout=max(1.0, deadline - time.monotonic()))
            with contextlib.suppress(subprocess.TimeoutExpired):
                group.proc.wait(timeout=1)
        for pid, started in strays.items():
            if started is not None and _started(pid) == started:  # the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self._local is not None:
            kill_listeners(self._local.api_port)

    def drop(self) -> None:
        """Remove this run's databases and broker keys."""
        from rce_lib.ledger import dispose_engine

        dispose_engine(self.ledger_url)
        while self._created:
            drop_database(self._created.pop())
        with contextlib.suppress(Exception):  # Redis gone: nothing of ours to clean
            delete_redis_keys(self.key_prefix, self.redis_db)

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {name} ({group.log_path})\n{group.log_tail(lines)}" for name, group in self.groups.items()
        )
