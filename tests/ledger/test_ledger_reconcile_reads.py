"""Ledger reads and writes the reconciliation sweep needs: key paging that survives bad rows,
per-row parsing, and a compare-and-delete release of a claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from rce_lib.ledger import Ledger, LedgerCorrupt, Progress
from rce_lib.ledger.models import Phase, Status

R = "r-rec"


def test_ids_to_reconcile_page_open_recent_and_claimed_records(ledger: Ledger) -> None:
    for n in range(7):
        ledger.upsert_progress(R, "w1", f"sddc-{n:04d}", "run-a", phase=Phase.PRECHECK)
    ledger.upsert_progress(R, "w1", "sddc-0003", "run-a", finished_at=datetime.now(UTC))
    ledger.upsert_progress(R, "w2", "sddc-0003", "run-b", finished_at=datetime.now(UTC))  # same SDDC, twice
    ledger.claim("sddc-0100", R, "w1", "run-a")  # claimed, never enrolled

    everything = ledger.sddc_ids_to_reconcile(
        updated_since=datetime.now(UTC) - timedelta(hours=1), page_size=2
    )
    assert everything == [*(f"sddc-{n:04d}" for n in range(7)), "sddc-0100"]
    future = datetime.now(UTC) + timedelta(hours=1)  # nothing is recent: only open records and claims
    open_only = ledger.sddc_ids_to_reconcile(updated_since=future, page_size=3)
    assert open_only == [f"sddc-{n:04d}" for n in range(7) if n != 3] + ["sddc-0100"]


def test_progress_of_sddc_parses_each_row_on_its_own(ledger: Ledger) -> None:
    ledger.upsert_progress(R, "w1", "sddc-0001", "run-a", phase=Phase.DONE, status=Status.SUCCEEDED)
    ledger.upsert_progress(R, "w2", "sddc-0001", "run-b", phase=Phase.PRECHECK)
    engine = create_engine(ledger.url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE rce_progress SET status = 'bogus' WHERE wave = 'w2'"))
    engine.dispose()

    good, bad = ledger.progress_of_sddc("sddc-0001")

    assert isinstance(good, Progress) and good.wave == "w1"
    assert isinstance(bad, LedgerCorrupt) and bad.key == f"{R}/w2/sddc-0001" and "status" in str(bad)
    assert ledger.sddc_ids_to_reconcile(updated_since=datetime.now(UTC) - timedelta(hours=1)) == ["sddc-0001"]


def test_release_if_held_frees_only_the_exact_claim(ledger: Ledger) -> None:
    old = ledger.claim("sddc-0001", R, "w1", "run-a").holder
    assert ledger.claim_of("sddc-0001") == old
    ledger.claim("sddc-0001", R, "w1", "run-b")  # taken again meanwhile by a new run

    assert not ledger.release_if_held(old)
    assert ledger.claim_of("sddc-0001") is not None

    current = ledger.claim_of("sddc-0001")
    assert current is not None and ledger.release_if_held(
        current, message="stale", data={"drift": "stale_claim"}
    )
    assert ledger.claim_of("sddc-0001") is None
    (event,) = ledger.events(sddc_id="sddc-0001", kinds=["claim_released"])
    assert (event.run_id, event.message, event.data) == ("run-b", "stale", {"drift": "stale_claim"})


def test_operations_of_lists_every_slot_of_one_sddc(ledger: Ledger) -> None:
    for slot in ("h2/exit", "h1/enter", ""):
        phase = Phase.UPGRADE_HOSTS if slot else Phase.PRECHECK
        ledger.record_operation_task(
            R,
            "w1",
            "sddc-0001",
            phase,
            host_id=slot,
            generation=0,
            task_id=f"t-{slot or 'p'}".replace("/", "-"),
            key=None,
            status="RUNNING",
            run_id="run-a",
        )
    slots = [(op.phase, op.host_id) for op in ledger.operations_of(R, "w1", "sddc-0001")]
    assert slots == [
        (Phase.PRECHECK, ""),
        (Phase.UPGRADE_HOSTS, "h1/enter"),
        (Phase.UPGRADE_HOSTS, "h2/exit"),
    ]
    assert ledger.operations_of(R, "w2", "sddc-0001") == []
