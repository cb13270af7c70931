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
    Float,
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

counters = Table(
    "rce_counter",
    metadata,
    Column("name", String(_ID), primary_key=True),
    Column("labels", String(512), primary_key=True),
    Column("value", Float, nullable=False, default=0.0),
    Column("updated_at", UtcDateTime, nullable=False),
)
"""Monotonic counters summed across every process that writes them (downstream request metrics)."""

service_limits = Table(
    "rce_service_limit",
    metadata,
    Column("service", String(_SHORT), primary_key=True),
    Column("limit_value", Float),
    Column("refusals", Integer, nullable=False, default=0),
    Column("accepted", Integer, nullable=False, default=0),
    Column("window_started", Float),
    Column("last_refusal", Float),
    Column("last_decrease", Float),
    Column("updated_at", UtcDateTime, nullable=False),
)
"""The adaptive limit of each downstream service (rce_lib.pacing); times are epoch seconds."""

service_slots = Table(
    "rce_service_slot",
    metadata,
    Column("holder", String(512), primary_key=True),
    Column("service", String(_SHORT), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_rce_service_slot_service", "service"),
    Index("ix_rce_service_slot_run", "run_id"),
)
"""One row per downstream task of ours that a service is (or may be) running (rce_lib.pacing)."""

service_ceilings = Table(
    "rce_service_ceiling",
    metadata,
    Column("service", String(_SHORT), primary_key=True),
    Column("slots", Integer, nullable=False),
    Column("source", String(_ID), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
"""Each service's fixed ceiling: its Airflow pool's size (rce_lib.airflow_support.pool_ceilings).
Slots are never granted above it, wherever the phase runs (rce_lib.pacing)."""

release_cache = Table(
    "rce_release_cache",
    metadata,
    Column("version", String(_SHORT), primary_key=True),
    Column("body", Text, nullable=False),
    Column("fetched_at", UtcDateTime, nullable=False),
)
"""Releases as the API last answered them (rce_lib.ledger.release_cache), shared by every phase."""

task_durations = Table(
    "rce_task_duration",
    metadata,
    Column("op", String(_SHORT), primary_key=True),
    Column("samples", Text, nullable=False, default="[]"),
    Column("updated_at", UtcDateTime, nullable=False),
)
"""Recent durations (seconds) of each operation's successful downstream tasks, fleet-wide
(rce_lib.ledger.durations): where a phase's first poll of a new task should land."""
