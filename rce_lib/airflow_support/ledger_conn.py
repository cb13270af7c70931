"""Find the ledger: the `rce_state` Airflow connection if there is one, else a SQLite
file under $AIRFLOW_HOME. Airflow 3 tasks cannot use Airflow's own metadata DB.

The SQLite default only holds while every task runs on this one host (LocalExecutor).
Under a distributed executor (Celery, Kubernetes, ...) each worker would silently get
a ledger of its own, and the idempotency generations, claims and admission slots
would diverge between hosts: there a missing or unusable `rce_state` fails the task
at once (no retries: retrying cannot fix configuration) with a message naming it.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from rce_lib.airflow_support import lookup_cache
from rce_lib.errors import RceError, Reason
from rce_lib.ledger import Ledger

LEDGER_CONN_ID = "rce_state"
LEDGER_URL_ENV = "RCE_LEDGER_URL"
# Executors that run every task on the scheduler's own host, so a local file is shared by all.
SINGLE_HOST_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


class LedgerConfigError(RceError, AirflowFailException):
    """The ledger is not configured for this deployment; Airflow fails the task without retries."""

    reason = Reason.LEDGER_MISCONFIGURED


def default_ledger_url() -> str:
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return f"sqlite:///{home / 'rce_ledger.db'}"


def configured_executors() -> list[str]:
    """Class names of the executors in `[core] executor` ("alias:module.Class, Other" forms too)."""
    from airflow.sdk.configuration import conf  # the task SDK's view: what workers see

    raw = conf.get("core", "executor", fallback="LocalExecutor") or "LocalExecutor"
    names = [entry.split(":")[-1].strip().rsplit(".", 1)[-1] for entry in raw.split(",")]
    return [name for name in names if name]


def distributed_executors() -> list[str]:
    """The configured executors that may run a task on another host than the scheduler's."""
    return [name for name in configured_executors() if name not in SINGLE_HOST_EXECUTORS]


def ledger_url() -> str:
    """The SQLAlchemy URL of the ledger. `RCE_LEDGER_URL` wins (tests, tools), then the
    `rce_state` connection (its `extra.url`, or its URI), then the SQLite default, which
    a distributed executor refuses (LedgerConfigError)."""
    return _resolve()[0]


def ledger_url_and_source() -> tuple[str, str]:
    """(URL, where it came from: `RCE_LEDGER_URL`, the connection, or the default file)."""
    return _resolve()


def _resolve() -> tuple[str, str]:
    """(URL, where it came from)."""
    remote = distributed_executors()
    explicit = os.environ.get(LEDGER_URL_ENV)
    if explicit:
        return _checked(explicit, LEDGER_URL_ENV, remote), LEDGER_URL_ENV
    return lookup_cache.get(("ledger_url", tuple(remote)), lambda: _from_connection(remote))


def _from_connection(remote: list[str]) -> tuple[str, str]:
    source = f"Airflow connection '{LEDGER_CONN_ID}'"
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(LEDGER_CONN_ID)
    except Exception as err:  # not defined (or unreadable): the single-host default, if allowed
        if remote:
            raise LedgerConfigError(
                f"{source} is not defined ({type(err).__name__}: {err}). The executor "
                f"{'/'.join(remote)} runs tasks on several hosts, so the ledger must be one shared "
                f"database (PostgreSQL); it will not fall back to a SQLite file on one worker. Define "
                f"{LEDGER_CONN_ID} with a PostgreSQL URI or extra.url, e.g. "
                f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}='postgresql://user:pass@db:5432/rce_ledger'."
            ) from err
        return default_ledger_url(), "the default SQLite file"
    url = (conn.extra_dejson or {}).get("url")
    if not url:
        url = conn.get_uri().replace("postgres://", "postgresql://", 1)
    return _checked(str(url), source, remote), source


def _checked(url: str, source: str, remote: list[str]) -> str:
    """The URL if SQLAlchemy can use it (and it is not a SQLite file under a distributed executor)."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise LedgerConfigError(
            f"{source} does not give a usable SQLAlchemy URL for the ledger "
            f"({_masked(url)}): {err}. Use e.g. postgresql://user:pass@host:5432/rce_ledger."
        ) from err
    if parsed.drivername in ("postgresql", "postgres"):
        # A connection URI names no driver; SQLAlchemy 2.1 would pick psycopg (3), not installed here.
        parsed = parsed.set(drivername=f"postgresql+{_postgres_driver()}")
        url = parsed.render_as_string(hide_password=False)
    if remote and parsed.get_backend_name() == "sqlite":
        raise LedgerConfigError(
            f"{source} points the ledger at SQLite ({_masked(url)}), but the executor "
            f"{'/'.join(remote)} runs tasks on several hosts: each would write a file of its own. "
            "Use one shared database (PostgreSQL)."
        )
    return url


def _postgres_driver() -> str:
    return "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable>"


MASK = "***"


def public_url(url: str) -> str:
    """The ledger URL with its password masked: what a trigger may carry in its kwargs (they
    are stored in Airflow's trigger table and shown in the UI). `resolve_public_url` gives
    the password back, in the triggerer, from where the task got it."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url if "@" not in url else "<unparseable ledger URL>"
    if parsed.password is None:
        return url
    return parsed.set(password=MASK).render_as_string(hide_password=False)


def resolve_public_url(url: str) -> str:
    """The real ledger URL for a masked one, resolved as a task resolves it (`RCE_LEDGER_URL`,
    then the `rce_state` connection: both readable in the triggerer). Blocking: call it
    through sync_to_async in a trigger. LedgerConfigError if the ledger found here is not
    the one the task used (same URL but for the password)."""
    parsed = make_url(url)
    if parsed.password != MASK:
        return url
    real, source = _resolve()
    if make_url(real).set(password=MASK) != parsed:
        raise LedgerConfigError(
            f"the ledger given to this trigger ({url}) is not the one {source} gives here "
            f"({_masked(real)}): configure the triggerer like the workers"
        )
    return real


@lru_cache(maxsize=4)
def _ledger_for(url: str) -> Ledger:
    ledger = Ledger(url)
    ledger.ensure_schema()
    return ledger


def get_ledger() -> Ledger:
    """The ledger, schema ensured. Raises LedgerConfigError (no retries) when it is not
    configured for this executor, RceError LEDGER_UNAVAILABLE (retried) when unreachable."""
    url, source = _resolve()
    try:
        return _ledger_for(url)
    except SQLAlchemyError as err:
        # Reachability is not configuration (a database restarting): Airflow's retries apply.
        first_line = (str(err).splitlines() or [""])[0]
        raise RceError(
            f"ledger from {source} ({_masked(url)}) is unreachable or unusable: "
            f"{type(err).__name__}: {first_line}",
            reason=Reason.LEDGER_UNAVAILABLE,
            retryable=True,
        ) from err
