"""`rce bench` refuses bad input before anything starts, and a simulator it cannot reach
ends the run in seconds. None of these tests starts Airflow: LocalAirflow is replaced by a
tripwire, so a test that got that far fails."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rce_lib import cli
from rce_lib.devenv import bench
from rce_lib.devenv.processes import free_port


class _Tripwire:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the bench got as far as Airflow")


@pytest.fixture(autouse=True)
def no_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "LocalAirflow", _Tripwire)


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad arguments must be refused before a home is made or a simulator started."""

    def tripwire(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("started something before checking the arguments")

    monkeypatch.setattr(bench, "_prepare_home", tripwire)
    monkeypatch.setattr(bench, "start_simulator", tripwire)


@pytest.mark.usefixtures("nothing_starts")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sddcs", "0"], "--sddcs: Input should be greater than or equal to 1 (got 0)"),
        (["--sddcs", "-5"], "--sddcs: Input should be greater than or equal to 1 (got -5)"),
        (["--time-scale", "0"], "--time-scale: Input should be greater than 0 (got 0.0)"),
        (["--time-scale", "-60"], "--time-scale: Input should be greater than 0 (got -60.0)"),
        (["--time-scale", "nan"], "--time-scale: Input should be a finite number"),
        (["--time-scale", "inf"], "--time-scale: Input should be a finite number"),
        (["--baseline-batch", "0"], "--baseline-batch: Input should be greater than or equal to 1 (got 0)"),
        (
            ["--sddcs", "10", "--baseline-batch", "11"],
            "--baseline-batch 11 is larger than the wave (--sddcs 10)",
        ),
        (["--max-parallel", "0"], "--max-parallel: Input should be greater than or equal to 1"),
        (["--timeout", "0"], "--timeout: Input should be greater than 0"),
        (["--capacity", "nsx"], "--capacity: expected SERVICE=N, got 'nsx'"),
        (["--capacity", "nsx=0"], "--capacity: capacity must be >= 1 per service, got nsx 0"),
        (["--capacity", "nsx=lots"], "--capacity: Input should be a valid integer"),
        (["--capacity", "dns=3"], "--capacity: unknown service(s) dns; expected vcenter, nsx, esx"),
        (["--duration", "UPGRADE_NSX=-1"], "--duration: durations must be finite and > 0 simulated seconds"),
        (["--duration", "REBOOT=5"], "--duration: unknown task type(s) REBOOT"),
        (["--parse-only", "--parse-fleet", "0"], "--parse-fleet and --parse-repeats must be >= 1"),
        (["--capacity-change", "nsx=5"], "--capacity-change: expected SERVICE=N@SECONDS"),
        (["--capacity-change", "dns=5@60"], "--capacity-change: expected SERVICE=N@SECONDS"),
        (["--capacity-change", "nsx=0@60"], "--capacity-change: capacity must be >= 1 and the time > 0"),
        (["--capacity-change", "nsx=5@0"], "--capacity-change: capacity must be >= 1 and the time > 0"),
    ],
)
def test_out_of_range_arguments_are_refused_with_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert cli.main(["bench", *argv]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("rce bench: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 5


@pytest.mark.usefixtures("nothing_starts")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sddcs", "ten"], "argument --sddcs: invalid int value: 'ten'"),
        (["--baseline-batch", "3", "--no-baseline"], "not allowed with argument"),
        (["--metadata-db", "mysql"], "argument --metadata-db: invalid choice: 'mysql'"),
    ],
)
def test_malformed_arguments_are_refused_by_the_parser(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_simulator_that_does_not_start_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real simulator process that exits at once (here: a config it refuses)."""
    real = bench._sim_config
    monkeypatch.setattr(bench, "_sim_config", lambda bs: {**real(bs), "no_such_setting": 1})
    started = time.monotonic()
    code = cli.main(["bench", "--sddcs", "2", "--no-baseline", "--home", str(tmp_path / "home")])
    assert code == cli.EXIT_BAD_INPUT
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert err.startswith("rce bench: the simulator did not start (see ")
    assert "no_such_setting" in err


def test_a_simulator_that_cannot_be_reached_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A simulator that says it listens on a port nobody answers on."""
    closed = f"http://127.0.0.1:{free_port()}"
    stopped: list[bool] = []

    class FakeGroup:
        pid = -1

        def stop(self) -> None:
            stopped.append(True)

    monkeypatch.setattr(bench, "start_simulator", lambda *a, **k: (FakeGroup(), closed))
    monkeypatch.setattr(bench, "SIM_REACH_S", 1.0)
    started = time.monotonic()
    code = cli.main(["bench", "--sddcs", "2", "--no-baseline", "--home", str(tmp_path / "home")])
    assert code == cli.EXIT_BAD_INPUT
    assert time.monotonic() - started < 10
    assert f"cannot reach the simulator at {closed} within 1 s (ConnectionError)" in capsys.readouterr().err
    assert stopped == [True]


def test_the_run_stops_when_the_simulator_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait for the DAG run watches the simulator: a dead one ends it at once."""

    class DeadGroup:
        name = "simulator"
        log_path = Path("/nowhere/simulator.log")

        def alive(self) -> bool:
            return False

        def log_tail(self, lines: int = 40) -> str:
            return "Killed"

    class NoRest:
        def run_state(self, *_: Any) -> str:
            raise AssertionError("asked Airflow although the simulator is gone")

    with pytest.raises(cli.CommandError, match=r"the simulator exited during the run .*Killed"):
        bench._wait(NoRest(), "d", "r", timeout=60, watch=[DeadGroup()])  # type: ignore[arg-type,list-item]


def test_a_baseline_simulator_that_does_not_start_keeps_the_engines_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise cli.CommandError("the simulator did not start (see x): boom")

    monkeypatch.setattr(bench, "_start_sim", refuse)
    bs = bench.BenchSettings(sddcs=4)
    b = bench._baseline(tmp_path, bs, {"fleet_size": 4}, tmp_path / "sim.yaml", [])
    assert b["state"] == "not run"
    assert "boom" in b["error"]
    assert b["batch_size"] == 4
    assert bench._speedup(b, 100.0) is None


def test_postgres_databases_are_fresh_used_and_dropped(tmp_path: Path) -> None:
    """The local PostgreSQL (as the distributed test uses it): two new databases that Airflow
    and the ledger are pointed at, gone when the run is over."""
    from sqlalchemy import create_engine, text

    home = tmp_path / "run-2-20260101-000000"

    def exists(url: str) -> bool:
        name = url.rsplit("/", 1)[1]
        admin = create_engine(f"postgresql+psycopg2://{bench.PG_SERVER}/postgres")
        try:
            with admin.connect() as conn:
                found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                return found.first() is not None
        finally:
            admin.dispose()

    with bench._databases("postgres", home) as dbs:
        meta = dbs.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert meta != dbs.ledger_url
        assert exists(meta) and exists(dbs.ledger_url)
        assert dbs.env["AIRFLOW_CONN_RCE_STATE"].endswith(dbs.ledger_url.rsplit("/", 1)[1])
        assert "SQL_ALCHEMY_CONNECT_ARGS" not in " ".join(dbs.env)  # SQLite's, not for PostgreSQL
    assert not exists(meta) and not exists(dbs.ledger_url)
    with bench._databases("sqlite", home) as dbs:
        assert dbs.ledger_url == f"sqlite:///{home / 'rce_ledger.db'}"
        assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in dbs.env  # standalone's own SQLite


def test_a_postgres_that_cannot_be_reached_fails_fast(tmp_path: Path) -> None:
    from rce_lib.cli import CommandError

    server = f"postgres@127.0.0.1:{free_port()}"
    started = time.monotonic()
    with (
        pytest.raises(CommandError, match=f"cannot create databases on {server}: "),
        bench._databases("postgres", tmp_path / "home", server),
    ):
        raise AssertionError("yielded without databases")
    assert time.monotonic() - started < 10
