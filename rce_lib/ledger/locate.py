"""Find and open the ledger for a command-line tool (`rce plan`, `rce status`), read-only in spirit.

Where: an explicit URL (`--ledger-url`), else `RCE_LEDGER_URL`, else the `rce_state` Airflow
connection, else the SQLite default under $AIRFLOW_HOME, the order the engine's tasks use
(rce_lib.airflow_support.ledger_conn). Airflow is imported only when the connection must be
looked up. A SQLite file that does not exist is reported, never created; every failure is a
`LedgerUnavailable` with one line naming the ledger (password masked).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from rce_lib.errors import RceError, Reason
from rce_lib.ledger.errors import LedgerCorrupt
from rce_lib.ledger.store import Ledger

LEDGER_URL_ENV = "RCE_LEDGER_URL"


class LedgerUnavailable(RceError):
    """The ledger cannot be found, opened or read."""

    reason = Reason.LEDGER_UNAVAILABLE


@dataclass(frozen=True)
class LedgerLocation:
    url: str
    source: str

    @property
    def shown(self) -> str:
        """The URL with its password masked."""
        return masked(self.url)

    @property
    def sqlite_file(self) -> Path | None:
        """The database file of a SQLite URL (None for other databases and in-memory SQLite)."""
        try:
            parsed = make_url(self.url)
        except (ArgumentError, ValueError):
            return None
        if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
            return None
        return Path(parsed.database)


def masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


def locate(explicit: str | None = None) -> LedgerLocation:
    """Where the ledger is (see the module doc); LedgerUnavailable if the configuration is unusable."""
    if explicit:
        return LedgerLocation(explicit, "--ledger-url")
    env = os.environ.get(LEDGER_URL_ENV)
    if env:
        return LedgerLocation(env, LEDGER_URL_ENV)
    from rce_lib.airflow_support.ledger_conn import ledger_url_and_source

    try:
        url, source = ledger_url_and_source()
    except RceError as err:
        raise LedgerUnavailable(err.message) from None
    return LedgerLocation(url, source)


def exists(location: LedgerLocation) -> bool:
    """False only for a SQLite file that is not there (nothing has been recorded yet)."""
    path = location.sqlite_file
    return path is None or path.exists()


def open_ledger(location: LedgerLocation) -> Ledger:
    """The ledger at `location`, checked readable (a missing SQLite file is an error, not created)."""
    try:
        make_url(location.url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise LedgerUnavailable(
            f"ledger {location.shown} (from {location.source}) is not a usable SQLAlchemy URL: {err}"
        ) from None
    path = location.sqlite_file
    if path is not None and not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise LedgerUnavailable(f"ledger {location.shown} (from {location.source}): {path} {what}")
    ledger = Ledger(location.url)
    with reading(location):
        ledger.ensure_schema()
    return ledger


@contextmanager
def reading(location: LedgerLocation) -> Iterator[None]:
    """Turn any database or row error inside the block into one LedgerUnavailable line."""
    try:
        yield
    except LedgerCorrupt as err:
        raise LedgerUnavailable(f"ledger {location.shown}: {err.message}") from None
    except SQLAlchemyError as err:
        first = (str(getattr(err, "orig", None) or err).splitlines() or [""])[0]
        raise LedgerUnavailable(
            f"cannot read the ledger {location.shown} (from {location.source}): {type(err).__name__}: {first}"
        ) from None
