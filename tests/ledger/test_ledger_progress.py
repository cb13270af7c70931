"""Progress records: CRUD, version bumps, and events written in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text, update

from rce_lib.errors import ParamsError, Reason
from rce_lib.ledger import (
    EventKind,
    LastError,
    Ledger,
    LedgerCorrupt,
    Phase,
    Status,
    get_engine,
    store,
)
from rce_lib.ledger import schema as ledger_schema

R, W = "r-2025-06", "wave-1"


def test_untouched_sddc_has_no_progress(ledger: Ledger) -> None:
    assert ledger.get(R, W, "sddc-1") is None


def test_upsert_creates_then_updates_and_bumps_version(ledger: Ledger) -> None:
    created = ledger.upsert_progress(R, W, "sddc-1", "run-a", target_version="8.0.3", source_version="8.0.2")
    assert (created.phase, created.status, created.version) == (Phase.PRECHECK, Status.PENDING, 1)
    assert (created.target_version, created.source_version, created.run_id) == ("8.0.3", "8.0.2", "run-a")

    updated = ledger.upsert_progress(R, W, "sddc-1", "run-b", status=Status.SKIPPED)
    assert updated.version == 2
    assert updated.status is Status.SKIPPED
    assert updated.run_id == "run-b"
    assert updated.target_version == "8.0.3"  # untouched fields survive
    assert ledger.get(R, W, "sddc-1") == updated


def test_every_state_change_writes_its_event(ledger: Ledger) -> None:
    ledger.phase_started(R, W, "sddc-1", "run-a", Phase.PRECHECK)
    ledger.phase_succeeded(R, W, "sddc-1", "run-a", Phase.PRECHECK)
    ledger.phase_started(R, W, "sddc-1", "run-a", Phase.SNAPSHOT)
    ledger.set_snapshot(R, W, "sddc-1", "run-a", "snap-1")
    ledger.phase_skipped(R, W, "sddc-1", "run-a", Phase.SNAPSHOT, message="already there")
    ledger.phase_failed(
        R,
        W,
        "sddc-1",
        "run-a",
        Phase.UPGRADE_VCENTER,
        code=Reason.DOWNSTREAM_TASK_FAILED,
        message="boom",
        retryable=False,
    )
    ledger.phase_started(R, W, "sddc-1", "run-a", Phase.ROLLBACK)

    evs = ledger.events(sddc_id="sddc-1")
    assert [(e.kind, e.phase) for e in evs] == [
        (EventKind.PHASE_STARTED, Phase.PRECHECK),
        (EventKind.PHASE_SUCCEEDED, Phase.PRECHECK),
        (EventKind.PHASE_STARTED, Phase.SNAPSHOT),
        (EventKind.SNAPSHOT_RECORDED, Phase.SNAPSHOT),
        (EventKind.PHASE_SKIPPED, Phase.SNAPSHOT),
        (EventKind.PHASE_FAILED, Phase.UPGRADE_VCENTER),
        (EventKind.ROLLBACK_STARTED, Phase.ROLLBACK),
    ]
    assert all(e.run_id == "run-a" and e.rollout == R and e.wave == W for e in evs)
    assert evs[5].data == {"code": "DOWNSTREAM_TASK_FAILED", "retryable": False}
    assert [e.id for e in evs] == sorted(e.id for e in evs)
    # one version bump per state change
    progress = ledger.get(R, W, "sddc-1")
    assert progress is not None and progress.version == len(evs)


def test_failed_event_write_rolls_back_the_state_change(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ledger.phase_started(R, W, "sddc-1", "run-a", Phase.PRECHECK)

    def broken(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("event log unavailable")

    monkeypatch.setattr(store, "_insert_event", broken)
    with pytest.raises(RuntimeError):
        ledger.phase_succeeded(R, W, "sddc-1", "run-a", Phase.PRECHECK)
    monkeypatch.undo()

    assert ledger.get(R, W, "sddc-1") == before
    assert [e.kind for e in ledger.events(sddc_id="sddc-1")] == [EventKind.PHASE_STARTED]


def test_phase_started_counts_attempts_and_clears_last_error(ledger: Ledger) -> None:
    ledger.phase_started(R, W, "sddc-1", "run-a", Phase.UPGRADE_NSX, target_version="8.0.3")
    ledger.phase_failed(
        R, W, "sddc-1", "run-a", Phase.UPGRADE_NSX, code="API_ERROR", message="503", retryable=True
    )
    failed = ledger.get(R, W, "sddc-1")
    assert failed is not None
    assert failed.last_error == LastError(code="API_ERROR", message="503", retryable=True)
    assert failed.finished_at is None  # retryable: not over yet

    again = ledger.phase_started(R, W, "sddc-1", "run-b", Phase.UPGRADE_NSX)
    assert again.attempts == 2
    assert again.phase_attempts == {Phase.UPGRADE_NSX: 2}
    assert again.last_error is None
    assert again.status is Status.RUNNING
    assert again.target_version == "8.0.3"
    assert again.started_at == failed.started_at  # first start is kept

    hosts = ledger.phase_started(R, W, "sddc-1", "run-b", Phase.UPGRADE_HOSTS)
    assert hosts.phase_attempts == {Phase.UPGRADE_NSX: 2, Phase.UPGRADE_HOSTS: 1}
    assert hosts.attempts == 3


def test_postcheck_success_finishes_the_sddc_as_done(ledger: Ledger) -> None:
    ledger.phase_started(R, W, "sddc-1", "run-a", Phase.POSTCHECK)
    done = ledger.phase_succeeded(R, W, "sddc-1", "run-a", Phase.POSTCHECK)
    assert (done.phase, done.status) == (Phase.DONE, Status.SUCCEEDED)
    assert done.finished_at is not None


def test_rollback_success_marks_rolled_back_and_terminal_failure_finishes(ledger: Ledger) -> None:
    failed = ledger.phase_failed(
        R, W, "sddc-1", "run-a", Phase.UPGRADE_HOSTS, code="HOST_DISCONNECTED", message="h1", retryable=False
    )
    assert failed.status is Status.FAILED and failed.finished_at is not None
    started = ledger.phase_started(R, W, "sddc-1", "run-a", Phase.ROLLBACK)
    assert started.finished_at is None
    rolled = ledger.phase_succeeded(R, W, "sddc-1", "run-a", Phase.ROLLBACK)
    assert (rolled.phase, rolled.status) == (Phase.ROLLBACK, Status.ROLLED_BACK)
    assert rolled.finished_at is not None


def test_update_if_version_applies_only_at_expected_version(ledger: Ledger) -> None:
    first = ledger.upsert_progress(R, W, "sddc-1", "run-a")
    won = ledger.update_if_version(R, W, "sddc-1", "run-a", first.version, attempts=5, status=Status.RUNNING)
    assert won is not None and won.version == first.version + 1 and won.attempts == 5

    lost = ledger.update_if_version(R, W, "sddc-1", "run-b", first.version, attempts=99)
    assert lost is None
    current = ledger.get(R, W, "sddc-1")
    assert current == won
    assert ledger.update_if_version(R, W, "sddc-absent", "run-a", 0, attempts=1) is None
    kinds = [e.kind for e in ledger.events(sddc_id="sddc-1")]
    assert kinds == [EventKind.PROGRESS_UPDATED, EventKind.PROGRESS_UPDATED]  # the lost CAS logged nothing


def test_last_error_can_be_set_and_cleared_through_upsert(ledger: Ledger) -> None:
    err = LastError(code="SDDC_NOT_READY", message="DEGRADED", retryable=True)
    assert ledger.upsert_progress(R, W, "sddc-1", "run-a", last_error=err).last_error == err
    assert ledger.upsert_progress(R, W, "sddc-1", "run-a", last_error=None).last_error is None


def test_unknown_progress_field_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ParamsError, match="version"):
        ledger.upsert_progress(R, W, "sddc-1", "run-a", **{"version": 7})  # type: ignore[arg-type]
    assert ledger.get(R, W, "sddc-1") is None


def test_list_progress_filters_and_summary_counts(ledger: Ledger) -> None:
    ledger.phase_started(R, W, "sddc-1", "run-a", Phase.PRECHECK)
    ledger.phase_succeeded(R, W, "sddc-2", "run-a", Phase.POSTCHECK)
    ledger.phase_failed(
        R, W, "sddc-3", "run-b", Phase.PRECHECK, code="PRECHECK_BLOCKED", message="x", retryable=False
    )
    ledger.upsert_progress(R, "wave-2", "sddc-4", "run-c")

    assert [p.sddc_id for p in ledger.list_progress(R, W)] == ["sddc-1", "sddc-2", "sddc-3"]
    assert [p.sddc_id for p in ledger.list_progress(run_id="run-a")] == ["sddc-1", "sddc-2"]
    failed_or_done = ledger.list_progress(R, W, statuses=[Status.FAILED, Status.SUCCEEDED])
    assert [p.sddc_id for p in failed_or_done] == ["sddc-2", "sddc-3"]
    assert len(ledger.list_progress()) == 4

    summary = ledger.summary(R, W)
    assert summary[Status.RUNNING] == 1 and summary[Status.SUCCEEDED] == 1 and summary[Status.FAILED] == 1
    assert summary[Status.PENDING] == 0 and set(summary) == set(Status)
    assert ledger.summary(R, W, run_id="run-b")[Status.FAILED] == 1
    assert sum(ledger.summary(R, W, run_id="run-b").values()) == 1


def test_timestamps_come_back_utc_aware(ledger_url: str) -> None:
    cest = timezone(timedelta(hours=2))
    fixed = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=cest)
    ledger = Ledger(ledger_url, clock=lambda: fixed)
    progress = ledger.phase_started(R, W, "sddc-1", "run-a", Phase.PRECHECK)
    for ts in (progress.started_at, progress.updated_at, ledger.events()[0].ts):
        assert ts is not None
        assert ts.utcoffset() == timedelta(0)
        assert ts == fixed
        assert ts.hour == 12


def test_events_filters_and_paging(ledger: Ledger) -> None:
    ledger.append_event(R, W, EventKind.COHORT_RESOLVED, run_id="run-a", data={"sddcs": ["sddc-1", "sddc-2"]})
    for i in range(5):
        ledger.append_event(
            R, W, EventKind.DRIFT_DETECTED, sddc_id=f"sddc-{i % 2}", run_id="run-a", message=str(i)
        )
    ledger.append_event(R, "wave-2", EventKind.WAVE_SUMMARY, run_id="run-b")

    cohort = ledger.events(kinds=[EventKind.COHORT_RESOLVED])
    assert (
        len(cohort) == 1 and cohort[0].sddc_id is None and cohort[0].data == {"sddcs": ["sddc-1", "sddc-2"]}
    )
    assert [e.message for e in ledger.events(sddc_id="sddc-1")] == ["1", "3"]
    assert [e.kind for e in ledger.events(wave="wave-2")] == [EventKind.WAVE_SUMMARY]
    assert len(ledger.events(rollout=R, run_id="run-a")) == 6
    pages = [ledger.events(limit=3)]
    while pages[-1]:
        pages.append(ledger.events(limit=3, after_id=pages[-1][-1].id))
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert [e.id for p in pages for e in p] == [e.id for e in ledger.events()]


def test_corrupt_progress_row_raises_ledger_corrupt_naming_the_row(ledger: Ledger) -> None:
    ledger.upsert_progress(R, W, "sddc-7", "run-a")
    with get_engine(ledger.url).begin() as conn:
        conn.execute(update(ledger_schema.progress).values(status="exploded"))
    with pytest.raises(LedgerCorrupt) as info:
        ledger.get(R, W, "sddc-7")
    assert info.value.table == "rce_progress"
    assert "sddc-7" in str(info.value) and "status" in str(info.value)
    assert info.value.reason is Reason.CONTRACT_VIOLATION
    with pytest.raises(LedgerCorrupt):
        ledger.list_progress()
    with pytest.raises(LedgerCorrupt, match="exploded"):
        ledger.summary(R, W)


def test_corrupt_event_json_raises_ledger_corrupt_naming_the_event(ledger: Ledger) -> None:
    event = ledger.append_event(R, W, EventKind.WAVE_SUMMARY, data={"ok": 1})
    with get_engine(ledger.url).begin() as conn:
        conn.execute(text("UPDATE rce_event SET data = '{not json' WHERE id = :id"), {"id": event.id})
    with pytest.raises(LedgerCorrupt, match=rf"rce_event\[{event.id}\].*data"):
        ledger.events()


def test_naive_datetime_is_refused(ledger: Ledger) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        ledger.upsert_progress(R, W, "sddc-1", "run-a", started_at=datetime(2025, 1, 1))
    assert ledger.get(R, W, "sddc-1") is None
    aware = ledger.upsert_progress(R, W, "sddc-1", "run-a", started_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert aware.started_at == datetime(2025, 1, 1, tzinfo=UTC)


def test_ensure_schema_is_idempotent_and_keeps_data(ledger: Ledger) -> None:
    ledger.ensure_schema()
    ledger.upsert_progress(R, W, "sddc-1", "run-a")
    ledger.ensure_schema()
    Ledger(ledger.url).ensure_schema()
    assert ledger.get(R, W, "sddc-1") is not None


def test_a_complete_schema_is_checked_without_the_write_lock(tmp_path: Path) -> None:
    """A new process's first ensure_schema while another holds SQLite's write lock: with every
    table there it reads and goes on (task processes do this once each); a missing table
    still makes it wait for the lock and create it."""
    import sqlite3
    import time

    from rce_lib.ledger import store

    path = tmp_path / "lock.db"
    url = f"sqlite:///{path}"
    Ledger(url).ensure_schema()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store._schema_ready.clear()  # as in a newly forked task process
        t0 = time.monotonic()
        Ledger(url).ensure_schema()
        assert time.monotonic() - t0 < 5
    finally:
        holder.execute("ROLLBACK")
    holder.execute("DROP TABLE rce_release_cache")
    store._schema_ready.clear()
    Ledger(url).ensure_schema()
    assert "rce_release_cache" in {r[0] for r in holder.execute("SELECT name FROM sqlite_master")}
    holder.close()


def test_phase_success_records_its_duration_and_history_reads_it(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 25, 12, 0, tzinfo=UTC)]
    ledger = Ledger(f"sqlite:///{tmp_path / 'd.db'}", clock=lambda: now[0])
    for sddc_id, seconds in (("a", 40), ("b", 60)):
        ledger.phase_started("r", "w", sddc_id, "run", Phase.UPGRADE_VCENTER)
        now[0] += timedelta(seconds=seconds)
        ledger.phase_succeeded("r", "w", sddc_id, "run", Phase.UPGRADE_VCENTER)
    ledger.phase_started("r", "w", "c", "run", Phase.PRECHECK)
    ledger.phase_skipped("r", "w", "c", "run", Phase.PRECHECK)  # found done: not a duration sample
    assert ledger.phase_durations("r") == {"upgrade_vcenter": [60.0, 40.0]}
    assert ledger.phase_durations("r", exclude_sddc_ids=["b"]) == {"upgrade_vcenter": [40.0]}
    assert ledger.phase_durations("other") == {}


def test_final_failures_count_verdicts_not_retries_nor_brakes(tmp_path: Path) -> None:
    from rce_lib.ledger.models import LastError

    ledger = Ledger(f"sqlite:///{tmp_path / 'f.db'}")
    now = datetime(2026, 11, 25, tzinfo=UTC)
    ledger.upsert_progress("r", "w", "rolled", "run", status=Status.ROLLED_BACK, finished_at=now)
    ledger.phase_failed("r", "w", "final", "run", Phase.UPGRADE_NSX, code="X", message="m", retryable=False)
    ledger.phase_failed("r", "w", "retrying", "run", Phase.UPGRADE_NSX, code="X", message="m", retryable=True)
    braked = LastError(code="KILL_SWITCH", message="m", retryable=False)
    ledger.upsert_progress(
        "r", "w", "braked", "run", status=Status.FAILED, last_error=braked, finished_at=now
    )
    ledger.upsert_progress("r", "w", "other-run", "run-2", status=Status.ROLLED_BACK, finished_at=now)
    assert ledger.final_failures("r", "w", "run") == 3
    assert ledger.final_failures("r", "w", "run", ignore_codes=["KILL_SWITCH"]) == 2


def test_a_late_success_of_an_earlier_phase_does_not_undo_done(ledger: Ledger) -> None:
    """Found by the crash-resume soak: a scheduler killed mid-phase leaves that phase's first
    execution running as an orphan while the retry goes on to postcheck; the orphan's success
    then came last and put a done SDDC back at upgrade_hosts."""
    ledger.phase_started(R, W, "sddc-1", "run-1", Phase.UPGRADE_HOSTS)
    ledger.phase_succeeded(R, W, "sddc-1", "run-1", Phase.UPGRADE_HOSTS)
    ledger.phase_succeeded(R, W, "sddc-1", "run-1", Phase.POSTCHECK)
    late = ledger.phase_succeeded(R, W, "sddc-1", "run-1", Phase.UPGRADE_HOSTS, message="orphan")
    assert (late.phase, late.status) == (Phase.DONE, Status.SUCCEEDED) and late.finished_at is not None
    assert [e.message for e in ledger.events(kinds=["phase_succeeded"])][-1] == "orphan"  # still logged
    again = ledger.phase_succeeded(R, W, "sddc-1", "run-2", Phase.PRECHECK)  # a new run may start over
    assert again.phase is Phase.PRECHECK


def test_a_late_start_or_failure_of_an_earlier_phase_does_not_undo_done(ledger: Ledger) -> None:
    """Found by the crash-resume soak in CI: a vCenter task instance the new scheduler had reset
    ran again after its SDDC was done; its start and its skip put the SDDC back at
    upgrade_vcenter."""
    ledger.phase_succeeded(R, W, "sddc-1", "run-1", Phase.POSTCHECK)
    ledger.phase_started(R, W, "sddc-1", "run-1", Phase.UPGRADE_VCENTER)
    ledger.phase_skipped(R, W, "sddc-1", "run-1", Phase.UPGRADE_VCENTER)
    failed = ledger.phase_failed(
        R, W, "sddc-1", "run-1", Phase.UPGRADE_NSX, code="X", message="late", retryable=True
    )
    assert (failed.phase, failed.status, failed.last_error) == (Phase.DONE, Status.SUCCEEDED, None)
    assert failed.finished_at is not None
    kinds = [e.kind for e in ledger.events(sddc_id="sddc-1")]
    assert kinds[-3:] == ["phase_started", "phase_skipped", "phase_failed"]  # all still logged
    rollback = ledger.phase_started(R, W, "sddc-1", "run-1", Phase.ROLLBACK)  # a canary rollback may
    assert rollback.phase is Phase.ROLLBACK
