"""The adaptive limits and the slots they bound, in the ledger: one truth for every worker,
on every machine (SQLite for one machine, PostgreSQL for the distributed setup).

A phase takes a slot on its service before it starts (or re-attaches to) a downstream
task and gives it back when it sees the task end. Slots count only while the limit is
closed; they are always kept, so that a decrease knows how much of our work is in flight.
Every change happens under one lock per service (SQLite: the write transaction;
PostgreSQL: an advisory lock), so concurrent workers never over-admit. A slot whose
holder vanished (a task never resumed) frees itself after `slot_ttl_s`; the wave's end
releases every slot of its run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, func, select, text, update

from rce_lib.ledger import Ledger, schema
from rce_lib.pacing.policy import LimitState, PacingPolicy, after_acceptance, after_refusal


@dataclass(frozen=True)
class SlotDecision:
    """Whether a slot was granted, and the service's state when it was decided."""

    granted: bool
    in_flight: int
    slots: float


@dataclass(frozen=True)
class ServiceState:
    """One service's limit and how many of our tasks hold slots on it (metrics, status)."""

    service: str
    limit: float | None
    in_flight: int


@dataclass(frozen=True)
class Change:
    """What feedback did to a service's limit (the caller logs a change)."""

    before: LimitState
    after: LimitState

    @property
    def changed_limit(self) -> bool:
        return self.before.limit != self.after.limit


class Pacer:
    """Shared AIMD limits and slots per downstream service."""

    def __init__(
        self, ledger: Ledger, policy: PacingPolicy | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.ledger = ledger
        self.policy = policy or PacingPolicy()
        self._clock = clock

    # ------------------------------------------------------------------ slots

    def acquire(self, service: str, holder: str, run_id: str) -> SlotDecision:
        """Take (or keep: a resumed holder) a slot on `service` if the limit has room."""
        now = self._clock()
        with self._locked(service) as conn:
            self._expire(conn, service, now)
            state = self._state(conn, service)
            held = self._count(conn, service)
            table = schema.service_slots
            expires = _ts(now + self.policy.slot_ttl_s)
            mine = conn.execute(select(table.c.holder).where(table.c.holder == holder)).first()
            if mine is not None:
                conn.execute(
                    update(table).where(table.c.holder == holder).values(expires_at=expires, run_id=run_id)
                )
                return SlotDecision(True, held, state.slots)
            if held >= state.slots:
                return SlotDecision(False, held, state.slots)
            conn.execute(
                table.insert().values(
                    holder=holder, service=service, run_id=run_id, acquired_at=_ts(now), expires_at=expires
                )
            )
            return SlotDecision(True, held + 1, state.slots)

    def release(self, holder: str) -> bool:
        """Give a slot back (the task ended, or was never started); False if it was not held."""
        table = schema.service_slots
        with self.ledger.transaction(write=True) as conn:
            return bool(conn.execute(delete(table).where(table.c.holder == holder)).rowcount)

    def release_run(self, run_id: str) -> int:
        """Give back every slot a DAG run still holds (its end: nothing of it is waited on)."""
        table = schema.service_slots
        with self.ledger.transaction(write=True) as conn:
            return int(conn.execute(delete(table).where(table.c.run_id == run_id)).rowcount)

    def has_room(self, service: str) -> bool:
        """Whether a new slot would be granted now (read only: the trigger's question)."""
        with self.ledger.transaction(write=False) as conn:
            state = self._state(conn, service)
            return state.limit is None or self._count(conn, service) < state.slots

    # --------------------------------------------------------------- feedback

    def refused(self, service: str) -> Change:
        """A start of ours on `service` was refused (429/503)."""
        now = self._clock()
        with self._locked(service) as conn:
            before = self._state(conn, service)
            after = after_refusal(before, now=now, in_flight=self._count(conn, service), policy=self.policy)
            self._save(conn, service, after)
            return Change(before, after)

    def accepted(self, service: str) -> Change:
        """A start of ours on `service` was accepted (2xx)."""
        now = self._clock()
        with self._locked(service) as conn:
            before = self._state(conn, service)
            after = after_acceptance(
                before, now=now, in_flight=self._count(conn, service), policy=self.policy
            )
            if after != before:
                self._save(conn, service, after)
            return Change(before, after)

    def states(self) -> list[ServiceState]:
        """Every service with a limit row or a live slot."""
        now = _ts(self._clock())
        limits, slots = schema.service_limits, schema.service_slots
        with self.ledger.transaction(write=False) as conn:
            rows = {
                r.service: r.limit_value for r in conn.execute(select(limits.c.service, limits.c.limit_value))
            }
            live = select(slots.c.service, func.count()).where(slots.c.expires_at > now)
            held = {str(s): int(n) for s, n in conn.execute(live.group_by(slots.c.service))}
        names = sorted(set(rows) | set(held))
        return [ServiceState(n, rows.get(n), int(held.get(n, 0))) for n in names]

    # ---------------------------------------------------------------- helpers

    @contextmanager
    def _locked(self, service: str) -> Iterator[Connection]:
        with self.ledger.transaction(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"rce-pacing/{service}"}
                )
            yield conn

    def _expire(self, conn: Connection, service: str, now: float) -> None:
        table = schema.service_slots
        conn.execute(delete(table).where(table.c.service == service, table.c.expires_at <= _ts(now)))

    def _count(self, conn: Connection, service: str) -> int:
        """Live slots on `service` (an expired one no longer counts, even before it is deleted)."""
        table = schema.service_slots
        live = (table.c.service == service) & (table.c.expires_at > _ts(self._clock()))
        return int(conn.execute(select(func.count()).where(live)).scalar_one())

    @staticmethod
    def _state(conn: Connection, service: str) -> LimitState:
        table = schema.service_limits
        row = conn.execute(select(table).where(table.c.service == service)).mappings().first()
        if row is None:
            return LimitState()
        return LimitState(
            limit=row["limit_value"],
            refusals=int(row["refusals"] or 0),
            accepted=int(row["accepted"] or 0),
            window_started=row["window_started"],
            last_refusal=row["last_refusal"],
            last_decrease=row["last_decrease"],
        )

    def _save(self, conn: Connection, service: str, state: LimitState) -> None:
        table = schema.service_limits
        values = {
            "limit_value": state.limit,
            "refusals": state.refusals,
            "accepted": state.accepted,
            "window_started": state.window_started,
            "last_refusal": state.last_refusal,
            "last_decrease": state.last_decrease,
            "updated_at": _ts(self._clock()),
        }
        if conn.execute(update(table).where(table.c.service == service).values(**values)).rowcount == 0:
            conn.execute(table.insert().values(service=service, **values))


def _ts(epoch: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch)
