"""max_parallel admission: at most `limit` SDDCs of a run in flight, even with
several processes admitting at once."""

from __future__ import annotations

import multiprocessing

from rce_lib.ledger import Ledger, Phase

R, W, RUN = "rollout-a", "wave-a", "run-1"


def test_admits_up_to_the_limit_then_refuses(ledger: Ledger) -> None:
    assert ledger.admit(R, W, "sddc-1", RUN, limit=2)
    assert ledger.admit(R, W, "sddc-2", RUN, limit=2)
    assert not ledger.admit(R, W, "sddc-3", RUN, limit=2)
    assert ledger.in_flight(R, W, RUN) == 2
    assert [e.sddc_id for e in ledger.events(kinds=["admitted"])] == ["sddc-1", "sddc-2"]


def test_an_admitted_sddc_is_admitted_again_on_retry(ledger: Ledger) -> None:
    assert ledger.admit(R, W, "sddc-1", RUN, limit=1)
    assert ledger.admit(R, W, "sddc-1", RUN, limit=1)
    assert ledger.in_flight(R, W, RUN) == 1


def test_a_finished_sddc_frees_its_slot(ledger: Ledger) -> None:
    assert ledger.admit(R, W, "sddc-1", RUN, limit=1)
    assert not ledger.admit(R, W, "sddc-2", RUN, limit=1)
    ledger.phase_succeeded(R, W, "sddc-1", RUN, Phase.POSTCHECK)
    assert ledger.in_flight(R, W, RUN) == 0
    assert ledger.admit(R, W, "sddc-2", RUN, limit=1)


def test_a_final_failure_frees_its_slot_but_a_retryable_one_does_not(ledger: Ledger) -> None:
    assert ledger.admit(R, W, "sddc-1", RUN, limit=1)
    ledger.phase_failed(R, W, "sddc-1", RUN, Phase.UPGRADE_NSX, code="X", message="m", retryable=True)
    assert not ledger.admit(R, W, "sddc-2", RUN, limit=1)
    ledger.phase_failed(R, W, "sddc-1", RUN, Phase.UPGRADE_NSX, code="X", message="m", retryable=False)
    assert ledger.admit(R, W, "sddc-2", RUN, limit=1)


def test_other_runs_and_waves_do_not_count(ledger: Ledger) -> None:
    assert ledger.admit(R, W, "sddc-1", RUN, limit=1)
    assert ledger.admit(R, "wave-b", "sddc-2", RUN, limit=1)
    assert ledger.admit(R, W, "sddc-3", "run-2", limit=1)


def _admit(url: str, sddc_id: str, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    out.put((sddc_id, Ledger(url).admit(R, W, sddc_id, RUN, limit=2)))  # type: ignore[attr-defined]


def test_concurrent_processes_never_over_admit(ledger_url: str) -> None:
    Ledger(ledger_url).ensure_schema()
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_admit, args=(ledger_url, f"sddc-{i}", barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert sum(results.values()) == 2
    assert Ledger(ledger_url).in_flight(R, W, RUN) == 2
