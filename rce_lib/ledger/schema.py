"""Ledger tables (SQLAlchemy Core). Portable across SQLite and PostgreSQL: JSON is
stored as text we encode ourselves (so a bad value is reported, not crashed on),
and timestamps go through UtcDateTime so they always come back aware and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

_ID = 128  # rollout, wave, sddc, host, run ids
_SHORT = 64  # phase, status, kind


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite has no time zones, so it stores naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the ledger; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ValueError(f"not a datetime: {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


progress = Table(
    "rce_progress",
    metadata,
    Column("rollout", String(_ID), primary_key=True),
    Column("wave", String(_ID), primary_key=True),
    Column("sddc_id", String(_ID), primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("phase", String(_SHORT), nullable=False),
    Column("status", String(_SHORT), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("phase_attempts", Text, nullable=False, default="{}"),
    Column("target_version", String(_SHORT)),
    Column("source_version", String(_SHORT)),
    Column("snapshot_id", String(_ID)),
    Column("task_ids", Text, nullable=False, default="{}"),
    Column("error_code", String(_SHORT)),
    Column("error_message", Text),
    Column("error_retryable", Boolean),
    Column("started_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("version", Integer, nullable=False, default=0),
    Index("ix_rce_progress_run", "run_id"),
)

operations = Table(
    "rce_operation",
    metadata,
    Column("rollout", String(_ID), primary_key=True),
    Column("wave", String(_ID), primary_key=True),
    Column("sddc_id", String(_ID), primary_key=True),
    Column("phase", String(_SHORT), primary_key=True),
    Column("host_id", String(_ID), primary_key=True),
    Column("generation", Integer, nullable=False, default=0),
    Column("task_id", String(_ID)),
    Column("idempotency_key", String(_ID)),
    Column("status", String(_SHORT)),
    Column("updated_at", UtcDateTime, nullable=False),
)

claims = Table(
    "rce_claim",
    metadata,
    Column("sddc_id", String(_ID), primary_key=True),
    Column("rollout", String(_ID), nullable=False),
    Column("wave", String(_ID), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
)

events = Table(
    "rce_event",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", UtcDateTime, nullable=False),
    Column("rollout", String(_ID), nullable=False),
    Column("wave", String(_ID), nullable=False),
    Column("sddc_id", String(_ID)),
    Column("run_id", String(250), nullable=False),
    Column("kind", String(_SHORT), nullable=False),
    Column("phase", String(_SHORT)),
    Column("message", Text, nullable=False, default=""),
    Column("data", Text, nullable=False, default="{}"),
    Index("ix_rce_event_scope", "rollout", "wave", "sddc_id"),
    Index("ix_rce_event_run", "run_id"),
)
