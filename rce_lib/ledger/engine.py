"""Engine creation: one engine per URL per process, tuned for several worker
processes writing the same ledger at once.

SQLite: WAL (readers never block the writer), synchronous=NORMAL (safe with WAL),
busy_timeout=30 s (wait for the lock instead of failing with "database is locked"),
and write transactions start with BEGIN IMMEDIATE so that two writers never both
hold a read snapshot and then deadlock upgrading to write. PostgreSQL: pool_pre_ping
so a connection dropped by the server is replaced, not reported as a task failure.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

WRITE_OPTION = "rce_ledger_write"
"""Execution option marking a write transaction (SQLite: BEGIN IMMEDIATE)."""

BUSY_TIMEOUT_MS = 30_000
#: how long a thread waits for its process's turn at an SQLite ledger's write lock (one_writer)
#: before it goes on to wait in SQLite's busy handler anyway
WRITER_WAIT_S = 30.0

_lock = threading.Lock()
_engines: dict[tuple[int, str], tuple[Engine, Engine]] = {}
_writers: dict[str, threading.RLock] = {}


def _after_fork_in_child() -> None:
    """A forked child (a task process, a trigger runner) starts with free locks: a thread of
    the parent may have held one at the fork, and that thread does not exist in the child."""
    global _lock, _writers
    _lock = threading.Lock()
    _writers = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_engine(url: str) -> Engine:
    """The engine for reads (SQLite: deferred BEGIN, so readers do not queue behind writers)."""
    return _cached(url)[0]


def get_write_engine(url: str) -> Engine:
    """The same pool, but every transaction is a write transaction (SQLite: BEGIN IMMEDIATE)."""
    return _cached(url)[1]


@contextmanager
def one_writer(url: str) -> Iterator[None]:
    """Around a write transaction. SQLite has one write lock per database, and a writer that
    finds it taken waits in SQLite's busy handler, which sleeps up to 100 ms between tries
    whether or not the lock came free meanwhile: with the triggerer's phase threads all
    writing, most of a write's time went to that sleep (docs/performance.md, twelfth round).
    So the threads of one process take turns here first, each woken the moment the previous
    one is done; other processes still meet in the busy handler. PostgreSQL: nothing to do."""
    if not url.startswith("sqlite"):
        yield
        return
    writer = _writers.get(url)
    if writer is None:  # once per ledger and process: not every write takes the engines' lock
        with _lock:
            writer = _writers.setdefault(url, threading.RLock())
    # a thread stuck in a write must not stop the others for good: past the wait, SQLite decides
    held = writer.acquire(timeout=WRITER_WAIT_S)
    try:
        yield
    finally:
        if held:
            writer.release()


def dispose_engine(url: str) -> None:
    """Close this process's pooled connections for url (tests dropping a database need it)."""
    with _lock:
        pair = _engines.pop((os.getpid(), url), None)
    if pair is not None:
        pair[0].dispose()


def _cached(url: str) -> tuple[Engine, Engine]:
    # Keyed by pid: a forked child must not reuse the parent's pooled connections.
    key = (os.getpid(), url)
    with _lock:
        pair = _engines.get(key)
        if pair is None:
            engine = _create(make_url(url))
            pair = (engine, engine.execution_options(**{WRITE_OPTION: True}))
            _engines[key] = pair
        return pair


def _create(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        _make_parent_dir(url.database)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _install_sqlite_hooks(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _make_parent_dir(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
