"""The bench's CPU accounting: a session's processes, by Airflow component."""

from __future__ import annotations

import subprocess
import sys
import time

from rce_lib.devenv.bench import session_cpu_by_role, session_cpu_seconds

BUSY = "import time, sys\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(30)"


def test_a_sessions_cpu_is_counted_and_split_by_command_line() -> None:
    # a process of its own session whose command line names the scheduler
    proc = subprocess.Popen([sys.executable, "-c", BUSY, "airflow", "scheduler"], start_new_session=True)
    try:
        # until its busy loop is over (it then sleeps): two readings compared must not race it
        deadline, last = time.monotonic() + 20, -1.0
        while time.monotonic() < deadline:
            now = session_cpu_seconds(proc.pid)[0]
            if now >= 0.6 and now == last:
                break
            last = now
            time.sleep(0.3)
        total, processes = session_cpu_seconds(proc.pid)
        by_role = session_cpu_by_role(proc.pid)
        assert processes == 1 and total >= 0.6
        assert set(by_role) == {"scheduler"} and abs(by_role["scheduler"] - total) < 0.05
        assert session_cpu_by_role(proc.pid + 10**7) == {}  # no such session
    finally:
        proc.kill()
        proc.wait()


def test_the_postgres_servers_cpu_includes_its_backends() -> None:
    """A backend's work (here a query that counts to 3 million) shows up in the server's reading,
    also after the backend has exited (the postmaster reaps it)."""
    from sqlalchemy import create_engine, text

    from rce_lib.devenv.airflow_distributed import PG_SERVER
    from rce_lib.devenv.bench import postgres_cpu_seconds

    before = postgres_cpu_seconds()
    assert before is not None  # CI starts the local server (.ci/run)
    engine = create_engine(f"postgresql+psycopg2://{PG_SERVER}/postgres")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM generate_series(1, 3000000)")).scalar_one()
    finally:
        engine.dispose()  # the backend exits
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (postgres_cpu_seconds() or 0) - before < 0.1:
        time.sleep(0.2)
    after = postgres_cpu_seconds()
    assert after is not None and after - before >= 0.1
