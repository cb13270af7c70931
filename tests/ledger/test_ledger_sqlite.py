"""SQLite specifics: the file's directory is created and the pragmas that make
several writer processes safe are in force on every connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from rce_lib.ledger import Ledger, dispose_engine, get_engine
from rce_lib.ledger.engine import get_write_engine


def test_sqlite_file_and_parent_dirs_are_created_with_wal(tmp_path: Path) -> None:
    db = tmp_path / "airflow_home" / "sub" / "rce_ledger.db"
    url = f"sqlite:///{db}"
    try:
        Ledger(url).upsert_progress("r", "w", "sddc-1", "run-a")
        assert db.exists()
        with get_engine(url).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
    finally:
        dispose_engine(url)


def test_one_engine_per_url_per_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    try:
        assert get_engine(url) is get_engine(url)
        assert get_write_engine(url).pool is get_engine(url).pool
        assert get_engine(url) is not get_engine(f"sqlite:///{tmp_path}/b.db")
    finally:
        dispose_engine(url)
        dispose_engine(f"sqlite:///{tmp_path}/b.db")


def test_write_transactions_take_the_write_lock_up_front(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a second writer waits at BEGIN, not at its first write (no deadlock)."""
    url = f"sqlite:///{tmp_path}/lock.db"
    try:
        Ledger(url).ensure_schema()
        with get_write_engine(url).begin() as conn:
            # Inside BEGIN IMMEDIATE this connection already holds the RESERVED lock,
            # so a raw second connection cannot begin a write even with no timeout.
            other = sqlite3.connect(str(tmp_path / "lock.db"), timeout=0, isolation_level=None)
            try:
                try:
                    other.execute("BEGIN IMMEDIATE")
                    locked = False
                except sqlite3.OperationalError as exc:
                    locked = "locked" in str(exc)
            finally:
                other.close()
            conn.execute(text("SELECT 1"))
        assert locked
    finally:
        dispose_engine(url)


def test_a_forked_child_opens_the_ledger_while_a_parent_thread_holds_its_locks(
    tmp_path: Path, in_forked_child: Callable[..., int]
) -> None:
    """Task processes and trigger runners are forked from processes with threads; a lock a
    parent thread held at the fork must not hang the child (os.register_at_fork)."""
    import threading

    from rce_lib.airflow_support import lookup_cache
    from rce_lib.ledger import engine, store

    url = f"sqlite:///{tmp_path}/fork.db"
    Ledger(url).ensure_schema()
    with engine.one_writer(url):
        pass  # the parent's lock for this ledger exists before the fork
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.one_writer(url), engine._lock, store._schema_lock, lookup_cache._decide_lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    try:
        assert in_forked_child(_open_in_child, url) == 0
    finally:
        release.set()
        holder.join(5)


def _open_in_child(url: str) -> None:
    from rce_lib.airflow_support import lookup_cache

    ledger = Ledger(url)
    ledger.ensure_schema()
    lookup_cache.for_this_process()
    with ledger.transaction(write=True):
        pass


def test_threads_of_one_process_take_turns_before_sqlites_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SQLite's busy timeout at 0, a writer that found the write lock taken would fail
    at once ("database is locked"): eight threads writing together all succeed only because
    they take turns in the process first (one_writer), never meeting at SQLite's lock."""
    import threading

    from rce_lib.ledger import engine

    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 0)
    url = f"sqlite:///{tmp_path}/turns.db"
    ledger = Ledger(url)
    ledger.ensure_schema()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait(10)
        try:
            for i in range(40):
                ledger.append_event(
                    "r", "w", "progress_updated", sddc_id=f"sddc-{n}", run_id="run", message=str(i)
                )
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    try:
        with get_engine(url).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 0
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert len(ledger.events(rollout="r", wave="w", limit=1000)) == 8 * 40
    finally:
        dispose_engine(url)
