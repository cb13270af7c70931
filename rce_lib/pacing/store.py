"""The adaptive limits and the slots they bound, in the ledger: one truth for every worker,
on every machine (SQLite for one machine, PostgreSQL for the distributed setup).

A phase takes a slot on its service before it starts (or re-attaches to) a downstream
task and gives it back when it sees the task end. Slots are never granted above the
service's fixed ceiling (its Airflow pool's size, copied here: rce_lib.airflow_support.
pool_ceilings) nor above its adaptive limit while that is closed; they are always kept, so
that a decrease knows how much of our work is in flight.
Every change happens under one lock per service (SQLite: the write transaction;
PostgreSQL: an advisory lock), so concurrent workers never over-admit. A slot whose
holder vanished (a task never resumed) frees itself after `slot_ttl_s`; the wave's end
releases every slot of its run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Connection, delete, func, select, text, update

from rce_lib.ledger import Ledger, schema
from rce_lib.pacing import wakeup
from rce_lib.pacing.policy import LimitState, PacingPolicy, after_acceptance, after_refusal


@dataclass(frozen=True)
class SlotDecision:
    """Whether a slot was granted, and the service's state when it was decided."""

    granted: bool
    in_flight: int
    slots: float
    """Slots allowed now: the lower of the ceiling and the adaptive limit (inf: neither)."""
    ceiling: int | None = None
    yielded: bool = False
    """Refused though there was room: a later phase waits for it (rce_lib.pacing.wakeup)."""

    @property
    def at_ceiling(self) -> bool:
        """Refused by the fixed ceiling (the pool's size), not by the adaptive limit."""
        return self.ceiling is not None and self.slots >= self.ceiling


@dataclass(frozen=True)
class ServiceState:
    """One service's limit and how many of our tasks hold slots on it (metrics, status)."""

    service: str
    limit: float | None
    in_flight: int
    ceiling: int | None = None


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

    def acquire(
        self, service: str, holder: str, run_id: str, *, yield_to_waiters: bool = False
    ) -> SlotDecision:
        """Take (or keep: a resumed holder) a slot on `service` if the limit has room.
        `yield_to_waiters`: a later phase waits for the slot; a new holder is refused."""
        now = self._clock()
        with self._locked(service) as conn:
            self._expire(conn, service, now)
            ceiling = self._ceiling(conn, service)
            slots = _allowed(self._state(conn, service), ceiling)
            held = self._count(conn, service)
            table = schema.service_slots
            expires = _ts(now + self.policy.slot_ttl_s)
            mine = conn.execute(select(table.c.holder).where(table.c.holder == holder)).first()
            if mine is not None:
                conn.execute(
                    update(table).where(table.c.holder == holder).values(expires_at=expires, run_id=run_id)
                )
                return SlotDecision(True, held, slots, ceiling)
            if held >= slots or yield_to_waiters:
                return SlotDecision(False, held, slots, ceiling, yielded=held < slots)
            conn.execute(
                table.insert().values(
                    holder=holder, service=service, run_id=run_id, acquired_at=_ts(now), expires_at=expires
                )
            )
            return SlotDecision(True, held + 1, slots, ceiling)

    def release(self, holder: str) -> bool:
        """Give a slot back (the task ended, or was never started); False if it was not held."""
        return self._release(schema.service_slots.c.holder == holder) > 0

    def release_prefix(self, prefix: str) -> int:
        """Give back every slot whose holder starts with `prefix` (one SDDC's, at a phase's end)."""
        return self._release(schema.service_slots.c.holder.startswith(prefix, autoescape=True))

    def release_run(self, run_id: str) -> int:
        """Give back every slot a DAG run still holds (its end: nothing of it is waited on)."""
        return self._release(schema.service_slots.c.run_id == run_id)

    def _release(self, which: ColumnElement[bool]) -> int:
        """Delete the slots `which` selects; each wakes a phase waiting here for its service."""
        table = schema.service_slots
        with self.ledger.transaction(write=True) as conn:
            services = list(conn.execute(select(table.c.service).where(which)).scalars())
            conn.execute(delete(table).where(which))
        for service in services:
            wakeup.given_back(str(service))
        return len(services)

    def has_room(self, service: str) -> bool:
        """Whether a new slot would be granted now (read only: the trigger's question)."""
        with self.ledger.transaction(write=False) as conn:
            slots = _allowed(self._state(conn, service), self._ceiling(conn, service))
            return slots == math.inf or self._count(conn, service) < slots

    # --------------------------------------------------------------- ceilings

    def set_ceilings(self, slots: Mapping[str, int | None], source: str) -> None:
        """Each service's fixed ceiling (its pool's size); None removes it (no ceiling known)."""
        table = schema.service_ceilings
        now = _ts(self._clock())
        with self.ledger.transaction(write=True) as conn:
            for service, value in slots.items():
                if value is None:
                    conn.execute(delete(table).where(table.c.service == service))
                    continue
                values = {"slots": int(value), "source": source, "updated_at": now}
                found = conn.execute(update(table).where(table.c.service == service).values(**values))
                if found.rowcount == 0:
                    conn.execute(table.insert().values(service=service, **values))

    def ceiling(self, service: str) -> int | None:
        """The service's fixed ceiling, None if none is known."""
        with self.ledger.transaction(write=False) as conn:
            return self._ceiling(conn, service)

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
        limits, slots, ceilings = schema.service_limits, schema.service_slots, schema.service_ceilings
        with self.ledger.transaction(write=False) as conn:
            rows = {
                r.service: r.limit_value for r in conn.execute(select(limits.c.service, limits.c.limit_value))
            }
            fixed_rows = conn.execute(select(ceilings.c.service, ceilings.c.slots))
            fixed = {str(r.service): int(r.slots) for r in fixed_rows}
            live = select(slots.c.service, func.count()).where(slots.c.expires_at > now)
            held = {str(s): int(n) for s, n in conn.execute(live.group_by(slots.c.service))}
        names = sorted(set(rows) | set(held) | set(fixed))
        return [ServiceState(n, rows.get(n), int(held.get(n, 0)), fixed.get(n)) for n in names]

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
    def _ceiling(conn: Connection, service: str) -> int | None:
        table = schema.service_ceilings
        value = conn.execute(select(table.c.slots).where(table.c.service == service)).scalar()
        return None if value is None else int(value)

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


def _allowed(state: LimitState, ceiling: int | None) -> float:
    """Slots allowed now: the lower of the adaptive limit's and the ceiling (inf: neither)."""
    return state.slots if ceiling is None else min(state.slots, float(ceiling))


def _ts(epoch: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch)
