"""Where the ledger lives. Under a distributed executor a missing or wrong `rce_state`
connection fails the task at once, naming the connection, instead of giving each worker
a SQLite file of its own; under the LocalExecutor the SQLite default still holds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support import ledger_conn
from rce_lib.airflow_support.ledger_conn import LedgerConfigError, get_ledger, ledger_url
from rce_lib.devenv.airflow_distributed import PG_SERVER, create_database, drop_database
from rce_lib.errors import RceError, Reason
from rce_lib.ledger import Phase, dispose_engine

CELERY = "CeleryExecutor"
KUBERNETES = "airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor"


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "airflow-home"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.delenv("RCE_LEDGER_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_RCE_STATE", raising=False)
    ledger_conn._ledger_for.cache_clear()
    yield home
    ledger_conn._ledger_for.cache_clear()


def executor(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", value)


@pytest.fixture
def pg_ledger_db() -> Iterator[str]:
    name = f"rce_ledger_conn_test_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    try:
        yield name
    finally:
        dispose_engine(url)
        drop_database(name)


@pytest.mark.parametrize(
    ("value", "remote"),
    [
        ("LocalExecutor", []),
        ("SequentialExecutor", []),
        ("CeleryExecutor", ["CeleryExecutor"]),
        (KUBERNETES, ["KubernetesExecutor"]),
        ("LocalExecutor,CeleryExecutor", ["CeleryExecutor"]),
        ("fast:airflow.executors.local_executor.LocalExecutor", []),
        ("big:my_company.executors.FleetExecutor", ["FleetExecutor"]),
    ],
)
def test_distributed_executors_are_read_from_the_executor_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, remote: list[str]
) -> None:
    executor(monkeypatch, value)
    assert ledger_conn.distributed_executors() == remote


@pytest.mark.parametrize("value", [CELERY, KUBERNETES, "LocalExecutor,CeleryExecutor"])
def test_missing_connection_fails_under_a_distributed_executor_naming_it(
    monkeypatch: pytest.MonkeyPatch, clean: Path, value: str
) -> None:
    executor(monkeypatch, value)
    with pytest.raises(LedgerConfigError) as info:
        get_ledger()
    message = str(info.value)
    assert "[LEDGER_MISCONFIGURED]" in message
    assert "'rce_state' is not defined" in message
    assert "SQLite" in message and "PostgreSQL" in message
    assert isinstance(info.value, AirflowFailException), "configuration errors must not be retried"
    assert not (clean / "rce_ledger.db").exists(), "no local SQLite ledger may be created"


def test_missing_connection_under_the_local_executor_uses_the_sqlite_file(
    monkeypatch: pytest.MonkeyPatch, clean: Path
) -> None:
    executor(monkeypatch, "LocalExecutor")
    assert ledger_url() == f"sqlite:///{clean / 'rce_ledger.db'}"
    get_ledger().phase_started("r", "w", "sddc-0001", "run-1", Phase.PRECHECK)
    assert (clean / "rce_ledger.db").exists()


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        # an HTTP connection given by mistake (the simulator's)
        ('{"conn_type": "http", "host": "sim", "port": 8600}', "does not give a usable SQLAlchemy URL"),
        ("nonsense-without-scheme", "does not give a usable SQLAlchemy URL"),
        # a file of one worker
        (
            json.dumps({"conn_type": "sqlite", "extra": {"url": "sqlite:////tmp/ledger.db"}}),
            "points the ledger at SQLite",
        ),
    ],
)
def test_wrong_connection_fails_under_a_distributed_executor_naming_it(
    monkeypatch: pytest.MonkeyPatch, clean: Path, conn: str, expected: str
) -> None:
    executor(monkeypatch, CELERY)
    monkeypatch.setenv("AIRFLOW_CONN_RCE_STATE", conn)
    with pytest.raises(LedgerConfigError) as info:
        get_ledger()
    assert "Airflow connection 'rce_state'" in str(info.value)
    assert expected in str(info.value)
    assert info.value.reason is Reason.LEDGER_MISCONFIGURED
    assert not (clean / "rce_ledger.db").exists()


def test_sqlite_url_from_the_environment_is_refused_under_a_distributed_executor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    executor(monkeypatch, CELERY)
    monkeypatch.setenv("RCE_LEDGER_URL", f"sqlite:///{tmp_path}/ledger.db")
    with pytest.raises(LedgerConfigError, match="RCE_LEDGER_URL points the ledger at SQLite"):
        get_ledger()


def test_postgres_connection_uri_works_under_celery_with_an_installed_driver(
    monkeypatch: pytest.MonkeyPatch, pg_ledger_db: str
) -> None:
    executor(monkeypatch, CELERY)
    monkeypatch.setenv("AIRFLOW_CONN_RCE_STATE", f"postgres://{PG_SERVER}/{pg_ledger_db}")
    url = ledger_url()
    assert url.startswith(("postgresql+psycopg2://", "postgresql+psycopg://")), url
    ledger = get_ledger()
    ledger.phase_started("r", "w", "sddc-0001", "run-1", Phase.PRECHECK)
    assert ledger.get("r", "w", "sddc-0001") is not None
    dispose_engine(url)


def test_unreachable_database_is_a_retryable_error_naming_the_connection_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executor(monkeypatch, CELERY)
    missing = f"rce_no_such_db_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_RCE_STATE",
        json.dumps(
            {
                "conn_type": "postgres",
                "extra": {"url": f"postgresql://postgres:hunter2@127.0.0.1:5432/{missing}"},
            }
        ),
    )
    with pytest.raises(RceError) as info:
        get_ledger()
    assert not isinstance(info.value, AirflowFailException), "a database that is down may come back: retry"
    assert info.value.reason is Reason.LEDGER_UNAVAILABLE and info.value.retryable
    assert "Airflow connection 'rce_state'" in str(info.value) and missing in str(info.value)
    assert "hunter2" not in str(info.value)
