"""The Ledger: the engine's own durable record of rollout progress, downstream
operations (with their Idempotency-Key generations), SDDC claims and events.

Airflow 3 tasks cannot write Airflow's metadata DB, so the engine keeps its own.
Every state change and the event that describes it commit in ONE transaction:
the log never says something happened that the state does not show, or the
reverse. Writers serialise per row (PostgreSQL: SELECT ... FOR UPDATE after an
INSERT ... ON CONFLICT DO NOTHING; SQLite: BEGIN IMMEDIATE), so several worker
processes can share one ledger without lost updates.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, TypeVar, Unpack

from pydantic import ValidationError
from sqlalchemy import (
    Connection,
    RowMapping,
    Select,
    Table,
    and_,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from rce_lib.errors import ParamsError
from rce_lib.ledger import schema
from rce_lib.ledger.engine import get_engine, get_write_engine, one_writer
from rce_lib.ledger.errors import LedgerCorrupt, StaleGeneration
from rce_lib.ledger.models import (
    ClaimHolder,
    ClaimResult,
    Event,
    EventKind,
    LastError,
    Operation,
    Phase,
    Progress,
    Status,
)

Clock = Callable[[], datetime]
_M = TypeVar("_M", Progress, Operation, ClaimHolder, Event)

_SCHEMA_LOCK_ID = 0x7263655F6C6564  # "rce_led": PostgreSQL advisory lock for create_all
_schema_ready: set[tuple[int, str]] = set()
_schema_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _schema_lock
    _schema_lock = threading.Lock()  # see rce_lib.ledger.engine._after_fork_in_child


os.register_at_fork(after_in_child=_after_fork_in_child)


class ProgressChanges(TypedDict, total=False):
    """Fields a caller may set on a progress record (everything else is the ledger's)."""

    phase: Phase
    status: Status
    attempts: int
    target_version: str | None
    source_version: str | None
    snapshot_id: str | None
    last_error: LastError | None
    started_at: datetime | None
    finished_at: datetime | None


_CHANGE_KEYS = frozenset(ProgressChanges.__annotations__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """Durable progress, operations, claims and events behind one SQLAlchemy URL."""

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.url = url
        self._clock: Clock = clock or utcnow

    # ------------------------------------------------------------------ schema

    def ensure_schema(self) -> None:
        """Create the tables if missing; idempotent and safe if processes race to do it.

        Every task process calls this once; when every table is there (the usual case) it costs
        one read, not a write transaction (on SQLite that is the database's one write lock)."""
        with get_engine(self.url).connect() as conn:
            present = set(inspect(conn).get_table_names())
        if present >= set(schema.metadata.tables):
            with _schema_lock:
                _schema_ready.add((os.getpid(), self.url))
            return
        with get_write_engine(self.url).begin() as conn:
            if conn.dialect.name == "postgresql":
                # DDL is transactional on PostgreSQL; the lock makes racers take turns.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_ID})
            # SQLite: BEGIN IMMEDIATE already holds the write lock.
            schema.metadata.create_all(conn)
        with _schema_lock:
            _schema_ready.add((os.getpid(), self.url))

    def _ready(self) -> None:
        if (os.getpid(), self.url) not in _schema_ready:
            self.ensure_schema()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        self._ready()
        with one_writer(self.url), get_write_engine(self.url).begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self._ready()
        with get_engine(self.url).begin() as conn:
            yield conn

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Connection]:
        """A transaction for ledger extensions (rce_lib.pacing); a write one holds the write lock
        (SQLite) from its start."""
        with self._write() if write else self._read() as conn:
            yield conn

    # ---------------------------------------------------------------- progress

    def get(self, rollout: str, wave: str, sddc_id: str) -> Progress | None:
        """The progress record of one SDDC in one wave, or None if never touched."""
        with self._read() as conn:
            row = _one(
                conn, _progress_select(rollout, wave, sddc_id), "rce_progress", (rollout, wave, sddc_id)
            )
        return None if row is None else _progress(row)

    def upsert_progress(
        self,
        rollout: str,
        wave: str,
        sddc_id: str,
        run_id: str,
        *,
        event: str = EventKind.PROGRESS_UPDATED,
        message: str = "",
        data: Mapping[str, Any] | None = None,
        **changes: Unpack[ProgressChanges],
    ) -> Progress:
        """Create or update one record under its row lock; bumps version, logs `event`."""
        values = _columns(dict(changes))
        return self._change(
            rollout, wave, sddc_id, run_id, lambda _p: values, event, _phase_of(changes), message, data
        )

    def update_if_version(
        self,
        rollout: str,
        wave: str,
        sddc_id: str,
        run_id: str,
        expected_version: int,
        *,
        event: str = EventKind.PROGRESS_UPDATED,
        message: str = "",
        data: Mapping[str, Any] | None = None,
        **changes: Unpack[ProgressChanges],
    ) -> Progress | None:
        """Compare-and-set: apply changes only if the record is still at expected_version.

        Returns the new record, or None if someone else changed it first (or it does not exist)."""
        values = _columns(dict(changes))
        now = self._clock()
        table = schema.progress
        with self._write() as conn:
            result = conn.execute(
                update(table)
                .where(_progress_key(rollout, wave, sddc_id), table.c.version == expected_version)
                .values(**values, run_id=run_id, updated_at=now, version=table.c.version + 1)
            )
            if result.rowcount != 1:
                return None
            _insert_event(conn, now, rollout, wave, sddc_id, run_id, event, _phase_of(changes), message, data)
            row = _one(
                conn, _progress_select(rollout, wave, sddc_id), "rce_progress", (rollout, wave, sddc_id)
            )
        assert row is not None  # updated in this very transaction
        return _progress(row)

    def phase_started(
        self,
        rollout: str,
        wave: str,
        sddc_id: str,
        run_id: str,
        phase: Phase,
        *,
        target_version: str | None = None,
        source_version: str | None = None,
        message: str = "",
    ) -> Progress:
        """Mark a phase running: counts the attempt (total and per phase), clears the last error."""
        phase = Phase(phase)
        now = self._clock()

        def compute(p: Progress) -> dict[str, Any]:
            if _done_in_run(p, run_id, phase):
                return {}
            counts = {k.value: v for k, v in p.phase_attempts.items()}
            counts[phase.value] = counts.get(phase.value, 0) + 1
            values: dict[str, Any] = {
                "phase": phase.value,
                "status": Status.RUNNING.value,
                "attempts": p.attempts + 1,
                "phase_attempts": json.dumps(counts),
                "error_code": None,
                "error_message": None,
                "error_retryable": None,
                "started_at": p.started_at or now,
                "finished_at": None,
            }
            if target_version is not None:
                values["target_version"] = target_version
            if source_version is not None:
                values["source_version"] = source_version
            return values

        kind = EventKind.ROLLBACK_STARTED if phase is Phase.ROLLBACK else EventKind.PHASE_STARTED
        return self._change(rollout, wave, sddc_id, run_id, compute, kind, phase, message, None)

    def phase_succeeded(
        self, rollout: str, wave: str, sddc_id: str, run_id: str, phase: Phase, *, message: str = ""
    ) -> Progress:
        """Mark a phase done. Postcheck moves the SDDC to `done`; rollback ends it `rolled_back`."""
        return self._phase_ok(
            rollout, wave, sddc_id, run_id, Phase(phase), EventKind.PHASE_SUCCEEDED, message
        )

    def phase_skipped(
        self, rollout: str, wave: str, sddc_id: str, run_id: str, phase: Phase, *, message: str = ""
    ) -> Progress:
        """Like phase_succeeded, for a phase whose outcome was already true on the real SDDC."""
        return self._phase_ok(rollout, wave, sddc_id, run_id, Phase(phase), EventKind.PHASE_SKIPPED, message)

    def phase_failed(
        self,
        rollout: str,
        wave: str,
        sddc_id: str,
        run_id: str,
        phase: Phase,
        *,
        code: str,
        message: str,
        retryable: bool,
    ) -> Progress:
        """Record a failure with its reason code; a non-retryable one also sets finished_at."""
        phase = Phase(phase)
        now = self._clock()
        values: dict[str, Any] = {
            "phase": phase.value,
            "status": Status.FAILED.value,
            "error_code": str(code),
            "error_message": message,
            "error_retryable": retryable,
            "finished_at": None if retryable else now,
        }
        data = {"code": str(code), "retryable": retryable}

        def compute(p: Progress) -> dict[str, Any]:
            return {} if _done_in_run(p, run_id, phase) else values

        return self._change(
            rollout, wave, sddc_id, run_id, compute, EventKind.PHASE_FAILED, phase, message, data
        )

    def set_snapshot(self, rollout: str, wave: str, sddc_id: str, run_id: str, snapshot_id: str) -> Progress:
        """Remember the snapshot a rollback would restore from."""
        values = {"snapshot_id": snapshot_id}
        return self._change(
            rollout,
            wave,
            sddc_id,
            run_id,
            lambda _p: values,
            EventKind.SNAPSHOT_RECORDED,
            Phase.SNAPSHOT,
            f"snapshot {snapshot_id}",
            {"snapshot_id": snapshot_id},
        )

    def list_progress(
        self,
        rollout: str | None = None,
        wave: str | None = None,
        run_id: str | None = None,
        statuses: Sequence[Status] | None = None,
    ) -> list[Progress]:
        """Progress records matching every filter given, ordered by (rollout, wave, sddc_id)."""
        table = schema.progress
        conds: list[ColumnElement[bool]] = []
        if rollout is not None:
            conds.append(table.c.rollout == rollout)
        if wave is not None:
            conds.append(table.c.wave == wave)
        if run_id is not None:
            conds.append(table.c.run_id == run_id)
        if statuses is not None:
            conds.append(table.c.status.in_([Status(s).value for s in statuses]))
        stmt = select(table).where(*conds).order_by(table.c.rollout, table.c.wave, table.c.sddc_id)
        with self._read() as conn:
            rows = _all(conn, stmt, "rce_progress", (rollout, wave, run_id))
        return [_progress(r) for r in rows]

    def summary(self, rollout: str, wave: str, run_id: str | None = None) -> dict[Status, int]:
        """Count of SDDCs per status in a wave (every status present, zeros included)."""
        table = schema.progress
        conds = [table.c.rollout == rollout, table.c.wave == wave]
        if run_id is not None:
            conds.append(table.c.run_id == run_id)
        stmt = select(table.c.status, func.count()).where(*conds).group_by(table.c.status)
        counts = dict.fromkeys(Status, 0)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        for status, count in rows:
            try:
                counts[Status(status)] += int(count)
            except ValueError as exc:
                raise LedgerCorrupt("rce_progress", f"{rollout}/{wave} status={status!r}", str(exc)) from None
        return counts

    def in_flight(self, rollout: str, wave: str, run_id: str) -> int:
        """How many SDDCs of a run are started and not finished (see `admit`)."""
        table = schema.progress
        stmt = select(func.count()).where(
            table.c.rollout == rollout,
            table.c.wave == wave,
            table.c.run_id == run_id,
            table.c.started_at.is_not(None),
            table.c.finished_at.is_(None),
        )
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def admit(self, rollout: str, wave: str, sddc_id: str, run_id: str, limit: int) -> bool:
        """Let one SDDC of a run start if fewer than `limit` of the run's SDDCs are in flight.

        In flight: started (started_at set) and not finished. An SDDC already in
        flight is admitted again (a retry or a cleared task). The count and the
        mark happen under one lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
        advisory lock per wave), so concurrent workers never over-admit.
        """
        table = schema.progress
        now = self._clock()
        key = (rollout, wave, sddc_id)
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"rce-admit/{rollout}/{wave}"}
                )
            _insert_ignore(conn, table, _new_progress(rollout, wave, sddc_id, run_id, now))
            row = _one(conn, _progress_select(*key).with_for_update(), "rce_progress", key)
            assert row is not None
            current = _progress(row)
            if current.started_at is not None and current.finished_at is None:
                return True
            in_flight = conn.execute(
                select(func.count()).where(
                    table.c.rollout == rollout,
                    table.c.wave == wave,
                    table.c.run_id == run_id,
                    table.c.sddc_id != sddc_id,
                    table.c.started_at.is_not(None),
                    table.c.finished_at.is_(None),
                )
            ).scalar_one()
            if int(in_flight) >= limit:
                return False
            conn.execute(
                update(table)
                .where(_progress_key(*key))
                .values(
                    started_at=now,
                    finished_at=None,
                    run_id=run_id,
                    updated_at=now,
                    version=table.c.version + 1,
                )
            )
            _insert_event(
                conn,
                now,
                rollout,
                wave,
                sddc_id,
                run_id,
                "admitted",
                None,
                f"admitted: {int(in_flight) + 1} of at most {limit} in flight",
                None,
            )
        return True

    def sddc_ids_to_reconcile(self, *, updated_since: datetime, page_size: int = 500) -> list[str]:
        """Distinct SDDC ids with a progress record still open (finished_at unset) or touched
        since `updated_since`, or with a claim; in id order, read in keyset pages.

        Only key columns are read, so a row whose other columns no longer parse is still
        listed (the reconcile sweep reports it instead of failing on it)."""
        table = schema.progress
        recent = (table.c.finished_at.is_(None)) | (table.c.updated_at >= updated_since)
        found: set[str] = set()
        after = ""
        while True:
            stmt = (
                select(table.c.sddc_id)
                .where(recent, table.c.sddc_id > after)
                .group_by(table.c.sddc_id)
                .order_by(table.c.sddc_id)
                .limit(page_size)
            )
            with self._read() as conn:
                ids = [str(r[0]) for r in conn.execute(stmt).all()]
            found.update(ids)
            if len(ids) < page_size:
                break
            after = ids[-1]
        with self._read() as conn:
            found.update(str(r[0]) for r in conn.execute(select(schema.claims.c.sddc_id)).all())
        return sorted(found)

    def progress_of_sddc(self, sddc_id: str) -> list[Progress | LedgerCorrupt]:
        """Every progress record of one SDDC (all rollouts and waves), each parsed on its own:
        a row that no longer parses comes back as its LedgerCorrupt, the others as Progress."""
        table = schema.progress
        stmt = select(table).where(table.c.sddc_id == sddc_id).order_by(table.c.rollout, table.c.wave)
        with self._read() as conn:
            rows = _all(conn, stmt, "rce_progress", (None, None, sddc_id))
        out: list[Progress | LedgerCorrupt] = []
        for row in rows:
            try:
                out.append(_progress(row))
            except LedgerCorrupt as exc:
                out.append(exc)
        return out

    # -------------------------------------------------------------- operations

    def get_operation(
        self, rollout: str, wave: str, sddc_id: str, phase: Phase, *, host_id: str = ""
    ) -> Operation | None:
        """The operation slot, or None: no task was recorded yet and the generation is 0."""
        key = (rollout, wave, sddc_id, Phase(phase).value, host_id)
        with self._read() as conn:
            row = _one(conn, _operation_select(*key), "rce_operation", key)
        return None if row is None else _operation(row)

    def record_operation_task(
        self,
        rollout: str,
        wave: str,
        sddc_id: str,
        phase: Phase,
        *,
        host_id: str = "",
        generation: int,
        task_id: str,
        key: str | None,
        status: str,
        run_id: str,
        kind: str = EventKind.TASK_STARTED,
        message: str = "",
    ) -> Operation:
        """Record the downstream task of a generation (and in the progress record, if any).

        `key` None keeps the slot's recorded Idempotency-Key (an observation of a task
        started earlier). Raises StaleGeneration if the slot has moved to another
        generation meanwhile."""
        phase = Phase(phase)
        pkey = (rollout, wave, sddc_id, phase.value, host_id)
        now = self._clock()
        with self._write() as conn:
            current = self._lock_operation(conn, pkey, now, initial_generation=generation)
            if current.generation != generation:
                raise StaleGeneration(
                    f"{'/'.join(pkey)}: task {task_id} is for generation {generation}, "
                    f"the ledger is at {current.generation}"
                )
            values: dict[str, Any] = {"task_id": task_id, "status": status, "updated_at": now}
            if key is not None:
                values["idempotency_key"] = key
            conn.execute(update(schema.operations).where(_operation_key(*pkey)).values(**values))
            self._set_progress_task(conn, now, rollout, wave, sddc_id, run_id, phase, host_id, task_id)
            data = {"host_id": host_id, "task_id": task_id, "generation": generation, "status": status}
            _insert_event(conn, now, rollout, wave, sddc_id, run_id, kind, phase, message, data)
            row = _one(conn, _operation_select(*pkey), "rce_operation", pkey)
        assert row is not None
        return _operation(row)

    def operations_of(self, rollout: str, wave: str, sddc_id: str) -> list[Operation]:
        """Every operation slot of one SDDC in one wave, ordered by (phase, host)."""
        t = schema.operations
        stmt = (
            select(t)
            .where(t.c.rollout == rollout, t.c.wave == wave, t.c.sddc_id == sddc_id)
            .order_by(t.c.phase, t.c.host_id)
        )
        with self._read() as conn:
            rows = _all(conn, stmt, "rce_operation", (rollout, wave, sddc_id))
        return [_operation(r) for r in rows]

    def bump_generation(
        self,
        rollout: str,
        wave: str,
        sddc_id: str,
        phase: Phase,
        *,
        host_id: str = "",
        expected_generation: int,
        run_id: str,
        message: str = "",
    ) -> int:
        """Move to the next generation if still at expected_generation; returns the current one.

        Two processes bumping from the same generation produce one bump: the loser
        gets the winner's value back and so derives the same new key."""
        phase = Phase(phase)
        pkey = (rollout, wave, sddc_id, phase.value, host_id)
        now = self._clock()
        with self._write() as conn:
            current = self._lock_operation(conn, pkey, now, initial_generation=0)
            if current.generation != expected_generation:
                return current.generation
            new = current.generation + 1
            conn.execute(
                update(schema.operations)
                .where(_operation_key(*pkey))
                .values(generation=new, task_id=None, idempotency_key=None, status=None, updated_at=now)
            )
            data = {"host_id": host_id, "from": current.generation, "to": new, "task_id": current.task_id}
            _insert_event(
                conn, now, rollout, wave, sddc_id, run_id, EventKind.GENERATION_BUMPED, phase, message, data
            )
        return new

    # ------------------------------------------------------------------ claims

    def claim(
        self, sddc_id: str, rollout: str, wave: str, run_id: str, ttl_s: float | None = None
    ) -> ClaimResult:
        """Hold an SDDC for (rollout, wave). Granted if free, already ours (any run), or expired."""
        now = self._clock()
        expires = None if ttl_s is None else now + timedelta(seconds=ttl_s)
        mine: dict[str, Any] = {
            "rollout": rollout,
            "wave": wave,
            "run_id": run_id,
            "claimed_at": now,
            "expires_at": expires,
        }
        with self._write() as conn:
            _insert_ignore(conn, schema.claims, {"sddc_id": sddc_id, **mine})
            stmt = select(schema.claims).where(schema.claims.c.sddc_id == sddc_id).with_for_update()
            row = _one(conn, stmt, "rce_claim", (sddc_id,))
            assert row is not None
            holder = _claim_holder(row)
            same_wave = (holder.rollout, holder.wave) == (rollout, wave)
            if same_wave or holder.expired(now):
                conn.execute(update(schema.claims).where(schema.claims.c.sddc_id == sddc_id).values(**mine))
                new = ClaimHolder(sddc_id=sddc_id, **mine)
                previous = None if holder == new else holder.model_dump(mode="json")
                _insert_event(
                    conn,
                    now,
                    rollout,
                    wave,
                    sddc_id,
                    run_id,
                    EventKind.CLAIM_GRANTED,
                    None,
                    "",
                    {"previous": previous},
                )
                return ClaimResult(granted=True, holder=new)
            _insert_event(
                conn,
                now,
                rollout,
                wave,
                sddc_id,
                run_id,
                EventKind.CLAIM_REFUSED,
                None,
                f"held by {holder.rollout}/{holder.wave} ({holder.run_id})",
                {"holder": holder.model_dump(mode="json")},
            )
            return ClaimResult(granted=False, holder=holder)

    def release(self, sddc_id: str, rollout: str, wave: str, run_id: str = "") -> bool:
        """Free an SDDC if (rollout, wave) holds it; True if a claim was released."""
        now = self._clock()
        table = schema.claims
        with self._write() as conn:
            result = conn.execute(
                delete(table).where(
                    table.c.sddc_id == sddc_id, table.c.rollout == rollout, table.c.wave == wave
                )
            )
            if result.rowcount != 1:
                return False
            _insert_event(conn, now, rollout, wave, sddc_id, run_id, EventKind.CLAIM_RELEASED, None, "", None)
        return True

    def release_if_held(
        self,
        holder: ClaimHolder,
        *,
        run_id: str = "",
        message: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> bool:
        """Free an SDDC only if `holder` still holds it, unchanged (same wave, run and claim time).

        A compare-and-delete: a sweep that judged a claim stale never frees a claim taken
        again meanwhile. True if this call released it."""
        now = self._clock()
        table = schema.claims
        with self._write() as conn:
            result = conn.execute(
                delete(table).where(
                    table.c.sddc_id == holder.sddc_id,
                    table.c.rollout == holder.rollout,
                    table.c.wave == holder.wave,
                    table.c.run_id == holder.run_id,
                    table.c.claimed_at == holder.claimed_at,
                )
            )
            if result.rowcount != 1:
                return False
            _insert_event(
                conn,
                now,
                holder.rollout,
                holder.wave,
                holder.sddc_id,
                run_id or holder.run_id,
                EventKind.CLAIM_RELEASED,
                None,
                message,
                data,
            )
        return True

    def claim_of(self, sddc_id: str) -> ClaimHolder | None:
        """Who holds the SDDC, expired or not (None: nobody)."""
        stmt = select(schema.claims).where(schema.claims.c.sddc_id == sddc_id)
        with self._read() as conn:
            row = _one(conn, stmt, "rce_claim", (sddc_id,))
        return None if row is None else _claim_holder(row)

    def active_claims(self) -> dict[str, ClaimHolder]:
        """Unexpired claims by SDDC id."""
        now = self._clock()
        with self._read() as conn:
            rows = _all(conn, select(schema.claims).order_by(schema.claims.c.sddc_id), "rce_claim", ())
        holders = (_claim_holder(r) for r in rows)
        return {h.sddc_id: h for h in holders if not h.expired(now)}

    # ------------------------------------------------------------------ events

    def append_event(
        self,
        rollout: str,
        wave: str,
        kind: str,
        *,
        sddc_id: str | None = None,
        run_id: str = "",
        phase: Phase | None = None,
        message: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append one event (wave-level when sddc_id is None)."""
        now = self._clock()
        with self._write() as conn:
            event_id = _insert_event(conn, now, rollout, wave, sddc_id, run_id, kind, phase, message, data)
            row = _one(
                conn, select(schema.events).where(schema.events.c.id == event_id), "rce_event", (event_id,)
            )
        assert row is not None
        return _event(row)

    def events(
        self,
        rollout: str | None = None,
        wave: str | None = None,
        sddc_id: str | None = None,
        run_id: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int = 1000,
        after_id: int | None = None,
    ) -> list[Event]:
        """Events matching every filter given, oldest first; page with after_id."""
        table = schema.events
        conds: list[ColumnElement[bool]] = []
        for column, value in (
            (table.c.rollout, rollout),
            (table.c.wave, wave),
            (table.c.sddc_id, sddc_id),
            (table.c.run_id, run_id),
        ):
            if value is not None:
                conds.append(column == value)
        if kinds is not None:
            conds.append(table.c.kind.in_([str(k) for k in kinds]))
        if after_id is not None:
            conds.append(table.c.id > after_id)
        stmt = select(table).where(*conds).order_by(table.c.id).limit(limit)
        with self._read() as conn:
            rows = _all(conn, stmt, "rce_event", (rollout, wave, sddc_id, run_id))
        return [_event(r) for r in rows]

    # ---------------------------------------------------------------- metrics

    def add_counters(self, increments: Mapping[tuple[str, str], float]) -> None:
        """Add to shared counters keyed by (name, labels); one transaction, any number of writers."""
        if not increments:
            return
        now = self._clock()
        table = schema.counters
        rows = [
            {"name": n, "labels": lbl, "value": v, "updated_at": now}
            for (n, lbl), v in sorted(increments.items())
        ]
        with self._write() as conn:
            dialect = conn.dialect.name
            if dialect not in ("postgresql", "sqlite"):
                raise NotImplementedError(f"counters need PostgreSQL or SQLite, not {dialect}")
            ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[table.c.name, table.c.labels],
                    set_={"value": table.c.value + ins.excluded.value, "updated_at": ins.excluded.updated_at},
                ),
                rows,
            )

    def counters(self) -> list[tuple[str, str, float]]:
        """Every shared counter as (name, labels, value)."""
        table = schema.counters
        with self._read() as conn:
            rows = conn.execute(select(table.c.name, table.c.labels, table.c.value).order_by(table.c.name))
            return [(str(r.name), str(r.labels), float(r.value)) for r in rows]

    def progress_counts(self) -> list[tuple[str, str, str, int]]:
        """(wave, phase, status, number of SDDCs) over every progress record."""
        t = schema.progress
        stmt = select(t.c.wave, t.c.phase, t.c.status, func.count()).group_by(t.c.wave, t.c.phase, t.c.status)
        with self._read() as conn:
            return [(str(w), str(p), str(st), int(n)) for w, p, st, n in conn.execute(stmt)]

    def running_since(self) -> list[tuple[str, str, str, str, datetime]]:
        """(rollout, wave, sddc_id, phase, updated_at) of every record whose phase is running."""
        t = schema.progress
        stmt = select(t.c.rollout, t.c.wave, t.c.sddc_id, t.c.phase, t.c.updated_at).where(
            t.c.status == Status.RUNNING.value
        )
        with self._read() as conn:
            return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4]) for r in conn.execute(stmt)]

    # --------------------------------------------------------------- internals

    def _change(
        self,
        rollout: str,
        wave: str,
        sddc_id: str,
        run_id: str,
        compute: Callable[[Progress], dict[str, Any]],
        kind: str,
        phase: Phase | None,
        message: str,
        data: Mapping[str, Any] | None,
    ) -> Progress:
        """Lock (creating if needed) one progress row, apply compute(current), log the event."""
        now = self._clock()
        key = (rollout, wave, sddc_id)
        with self._write() as conn:
            _insert_ignore(conn, schema.progress, _new_progress(rollout, wave, sddc_id, run_id, now))
            row = _one(conn, _progress_select(*key).with_for_update(), "rce_progress", key)
            assert row is not None
            values = compute(_progress(row))
            conn.execute(
                update(schema.progress)
                .where(_progress_key(*key))
                .values(**values, run_id=run_id, updated_at=now, version=schema.progress.c.version + 1)
            )
            _insert_event(conn, now, rollout, wave, sddc_id, run_id, kind, phase, message, data)
            row = _one(conn, _progress_select(*key), "rce_progress", key)
        assert row is not None
        return _progress(row)

    def _phase_ok(
        self, rollout: str, wave: str, sddc_id: str, run_id: str, phase: Phase, kind: str, message: str
    ) -> Progress:
        now = self._clock()
        values: dict[str, Any] = {
            "phase": phase.value,
            "status": Status.SUCCEEDED.value,
            "error_code": None,
            "error_message": None,
            "error_retryable": None,
        }
        if phase in (Phase.POSTCHECK, Phase.DONE):
            values.update(phase=Phase.DONE.value, finished_at=now)
        elif phase is Phase.ROLLBACK:
            values.update(status=Status.ROLLED_BACK.value, finished_at=now)
        started = self._last_phase_start(rollout, wave, sddc_id, phase)
        data = None if started is None else {"duration_s": round((now - started).total_seconds(), 3)}

        def compute(p: Progress) -> dict[str, Any]:
            # A late success of an earlier phase of the same run (an orphaned execution that a
            # crashed scheduler left running, finishing after the SDDC was done) is logged, but
            # does not move the SDDC back from done.
            return {} if _done_in_run(p, run_id, phase) else values

        return self._change(rollout, wave, sddc_id, run_id, compute, kind, phase, message, data)

    def _last_phase_start(self, rollout: str, wave: str, sddc_id: str, phase: Phase) -> datetime | None:
        table = schema.events
        kinds = [EventKind.PHASE_STARTED.value, EventKind.ROLLBACK_STARTED.value]
        stmt = (
            select(table)
            .where(
                table.c.rollout == rollout,
                table.c.wave == wave,
                table.c.sddc_id == sddc_id,
                table.c.kind.in_(kinds),
                table.c.phase == phase.value,
            )
            .order_by(table.c.id.desc())
            .limit(1)
        )
        with self._read() as conn:
            rows = _all(conn, stmt, "rce_event", (rollout, wave, sddc_id))
        return _event(rows[0]).ts if rows else None

    def phase_durations(
        self, rollout: str, *, exclude_sddc_ids: Sequence[str] = (), limit: int = 2000
    ) -> dict[str, list[float]]:
        """Seconds each phase took, per phase, over the rollout's most recent successes
        (phases that found their work already done are left out: they took no time)."""
        table = schema.events
        stmt = (
            select(table)
            .where(table.c.rollout == rollout, table.c.kind == EventKind.PHASE_SUCCEEDED.value)
            .order_by(table.c.id.desc())
            .limit(limit)
        )
        with self._read() as conn:
            rows = _all(conn, stmt, "rce_event", (rollout,))
        out: dict[str, list[float]] = {}
        excluded = set(exclude_sddc_ids)
        for event in (_event(r) for r in rows):
            seconds = event.data.get("duration_s")
            if event.phase is None or event.sddc_id in excluded or not isinstance(seconds, int | float):
                continue
            out.setdefault(event.phase.value, []).append(float(seconds))
        return out

    def final_failures(
        self, rollout: str, wave: str, run_id: str, *, ignore_codes: Sequence[str] = ()
    ) -> int:
        """SDDCs of a run that failed for good (not to be retried by Airflow) or were rolled back;
        failures with a code in `ignore_codes` (an operator's brake, not the release) are not counted."""
        table = schema.progress
        failed = and_(table.c.status == Status.FAILED.value, table.c.finished_at.is_not(None))
        stmt = select(func.count()).where(
            table.c.rollout == rollout,
            table.c.wave == wave,
            table.c.run_id == run_id,
            (table.c.status == Status.ROLLED_BACK.value) | failed,
        )
        if ignore_codes:
            stmt = stmt.where(
                table.c.error_code.is_(None) | table.c.error_code.not_in([str(c) for c in ignore_codes])
            )
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def _lock_operation(
        self,
        conn: Connection,
        pkey: tuple[str, str, str, str, str],
        now: datetime,
        *,
        initial_generation: int,
    ) -> Operation:
        rollout, wave, sddc_id, phase, host_id = pkey
        _insert_ignore(
            conn,
            schema.operations,
            {
                "rollout": rollout,
                "wave": wave,
                "sddc_id": sddc_id,
                "phase": phase,
                "host_id": host_id,
                "generation": initial_generation,
                "updated_at": now,
            },
        )
        row = _one(conn, _operation_select(*pkey).with_for_update(), "rce_operation", pkey)
        assert row is not None
        return _operation(row)

    def _set_progress_task(
        self,
        conn: Connection,
        now: datetime,
        rollout: str,
        wave: str,
        sddc_id: str,
        run_id: str,
        phase: Phase,
        host_id: str,
        task_id: str,
    ) -> None:
        key = (rollout, wave, sddc_id)
        row = _one(conn, _progress_select(*key).with_for_update(), "rce_progress", key)
        if row is None:
            return
        current = _progress(row)
        task_ids = {p.value: dict(hosts) for p, hosts in current.task_ids.items()}
        task_ids.setdefault(phase.value, {})[host_id] = task_id
        conn.execute(
            update(schema.progress)
            .where(_progress_key(*key))
            .values(
                task_ids=json.dumps(task_ids),
                run_id=run_id,
                updated_at=now,
                version=schema.progress.c.version + 1,
            )
        )


# ---------------------------------------------------------------------- helpers


def _progress_key(rollout: str, wave: str, sddc_id: str) -> ColumnElement[bool]:
    t = schema.progress
    return and_(t.c.rollout == rollout, t.c.wave == wave, t.c.sddc_id == sddc_id)


def _progress_select(rollout: str, wave: str, sddc_id: str) -> Select[Any]:
    return select(schema.progress).where(_progress_key(rollout, wave, sddc_id))


def _operation_key(rollout: str, wave: str, sddc_id: str, phase: str, host_id: str) -> ColumnElement[bool]:
    t = schema.operations
    return and_(
        t.c.rollout == rollout,
        t.c.wave == wave,
        t.c.sddc_id == sddc_id,
        t.c.phase == phase,
        t.c.host_id == host_id,
    )


def _operation_select(rollout: str, wave: str, sddc_id: str, phase: str, host_id: str) -> Select[Any]:
    return select(schema.operations).where(_operation_key(rollout, wave, sddc_id, phase, host_id))


def _new_progress(rollout: str, wave: str, sddc_id: str, run_id: str, now: datetime) -> dict[str, Any]:
    return {
        "rollout": rollout,
        "wave": wave,
        "sddc_id": sddc_id,
        "run_id": run_id,
        "phase": Phase.PRECHECK.value,
        "status": Status.PENDING.value,
        "attempts": 0,
        "phase_attempts": "{}",
        "task_ids": "{}",
        "updated_at": now,
        "version": 0,
    }


def _done_in_run(p: Progress, run_id: str, phase: Phase) -> bool:
    """A forward phase of a run whose SDDC is already done: a late execution (an orphan that a
    crashed scheduler left running, or a task instance it reset and ran again after the SDDC
    was finished). Its start, success or failure is logged but does not move the SDDC back."""
    forward = phase not in (Phase.POSTCHECK, Phase.DONE, Phase.ROLLBACK)
    return forward and p.phase is Phase.DONE and p.run_id == run_id


def _insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT unless the primary key exists; True if this call inserted the row."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        result = conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
        return result.rowcount == 1
    if dialect == "sqlite":
        result = conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
        return result.rowcount == 1
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
    except IntegrityError:
        return False
    return True


def _insert_event(
    conn: Connection,
    now: datetime,
    rollout: str,
    wave: str,
    sddc_id: str | None,
    run_id: str,
    kind: str,
    phase: Phase | None,
    message: str,
    data: Mapping[str, Any] | None,
) -> int:
    result = conn.execute(
        insert(schema.events)
        .values(
            ts=now,
            rollout=rollout,
            wave=wave,
            sddc_id=sddc_id,
            run_id=run_id,
            kind=str(kind),
            phase=None if phase is None else Phase(phase).value,
            message=message,
            data=json.dumps(dict(data or {}), default=str),
        )
        .returning(schema.events.c.id)
    )
    return int(result.scalar_one())


def _columns(changes: dict[str, Any]) -> dict[str, Any]:
    """ProgressChanges -> column values, refusing keys the caller may not set."""
    unknown = set(changes) - _CHANGE_KEYS
    if unknown:
        raise ParamsError(f"unknown progress fields: {sorted(unknown)}")
    values = dict(changes)
    if "phase" in values:
        values["phase"] = Phase(values["phase"]).value
    if "status" in values:
        values["status"] = Status(values["status"]).value
    if "last_error" in values:
        err = values.pop("last_error")
        err = None if err is None else LastError.model_validate(err)
        values["error_code"] = None if err is None else err.code
        values["error_message"] = None if err is None else err.message
        values["error_retryable"] = None if err is None else err.retryable
    return values


def _phase_of(changes: Mapping[str, Any]) -> Phase | None:
    phase = changes.get("phase")
    return None if phase is None else Phase(phase)


def _one(conn: Connection, stmt: Select[Any], table: str, key: tuple[Any, ...]) -> RowMapping | None:
    try:
        return conn.execute(stmt).mappings().one_or_none()
    except (ValueError, TypeError) as exc:  # a column value the driver/type cannot read
        raise LedgerCorrupt(table, _fmt_key(key), str(exc)) from None


def _all(conn: Connection, stmt: Select[Any], table: str, key: tuple[Any, ...]) -> Sequence[RowMapping]:
    try:
        return conn.execute(stmt).mappings().all()
    except (ValueError, TypeError) as exc:
        raise LedgerCorrupt(table, f"query {_fmt_key(key)}", str(exc)) from None


def _fmt_key(key: tuple[Any, ...]) -> str:
    return "/".join("*" if k is None else str(k) for k in key)


def _json(table: str, key: str, column: str, value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise LedgerCorrupt(table, key, f"{column}: {exc}") from None


def _progress(row: RowMapping) -> Progress:
    key = f"{row['rollout']}/{row['wave']}/{row['sddc_id']}"
    data = dict(row)
    code = data.pop("error_code")
    message = data.pop("error_message")
    retryable = data.pop("error_retryable")
    data["last_error"] = (
        None if code is None else {"code": code, "message": message or "", "retryable": bool(retryable)}
    )
    data["phase_attempts"] = _json("rce_progress", key, "phase_attempts", data["phase_attempts"])
    data["task_ids"] = _json("rce_progress", key, "task_ids", data["task_ids"])
    return _parse(Progress, "rce_progress", key, data)


def _operation(row: RowMapping) -> Operation:
    key = f"{row['rollout']}/{row['wave']}/{row['sddc_id']}/{row['phase']}/{row['host_id']}"
    return _parse(Operation, "rce_operation", key, dict(row))


def _claim_holder(row: RowMapping) -> ClaimHolder:
    return _parse(ClaimHolder, "rce_claim", str(row["sddc_id"]), dict(row))


def _event(row: RowMapping) -> Event:
    key = str(row["id"])
    data = dict(row)
    data["data"] = _json("rce_event", key, "data", data["data"])
    return _parse(Event, "rce_event", key, data)


def _parse(model: type[_M], table: str, key: str, data: dict[str, Any]) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise LedgerCorrupt(table, key, errors) from None
