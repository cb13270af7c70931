"""Shared limits and slots in the ledger: granted up to the limit, never over it, even with
several processes at once; given back, expired, released with their run."""

from __future__ import annotations

import faulthandler
import multiprocessing
from typing import Any

from rce_lib.ledger import Ledger
from rce_lib.pacing.policy import PacingPolicy
from rce_lib.pacing.store import Pacer

POLICY = PacingPolicy(refusals=3, window_s=30, cooldown_s=30, decrease=0.5, slot_ttl_s=60)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def close_limit(pacer: Pacer, service: str, holders: int) -> None:
    """Hold `holders` slots, then have the service refuse three starts: limit = holders / 2."""
    for i in range(holders):
        assert pacer.acquire(service, f"held-{i}", "run-0").granted
    for _ in range(3):
        pacer.refused(service)


def test_open_services_grant_every_slot_and_count_them(ledger: Ledger) -> None:
    pacer = Pacer(ledger, POLICY)
    for i in range(30):
        assert pacer.acquire("nsx", f"h{i}", "run-1").granted
    assert pacer.has_room("nsx")
    [state] = pacer.states()
    assert (state.service, state.limit, state.in_flight) == ("nsx", None, 30)


def test_a_closed_limit_refuses_new_slots_until_one_is_given_back(ledger: Ledger) -> None:
    pacer = Pacer(ledger, POLICY)
    close_limit(pacer, "nsx", holders=8)
    assert pacer.states()[0].limit == 4.0
    assert not pacer.has_room("nsx")
    decision = pacer.acquire("nsx", "new", "run-1")
    assert (decision.granted, decision.in_flight, decision.slots) == (False, 8, 4)
    for i in range(4):
        assert pacer.release(f"held-{i}")
    assert not pacer.has_room("nsx")  # 4 held, limit 4
    assert pacer.release("held-4")
    assert pacer.has_room("nsx")
    assert pacer.acquire("nsx", "new", "run-1").granted
    assert not pacer.acquire("nsx", "newer", "run-1").granted


def test_a_holder_keeps_its_slot_when_it_comes_back(ledger: Ledger) -> None:
    """A retried or cleared phase re-attaches to its running task: same holder, same slot."""
    pacer = Pacer(ledger, POLICY)
    close_limit(pacer, "esx", holders=2)  # limit 1, 2 held
    assert pacer.acquire("esx", "held-1", "run-2").granted
    assert pacer.states()[0].in_flight == 2


def test_services_are_paced_apart(ledger: Ledger) -> None:
    pacer = Pacer(ledger, POLICY)
    close_limit(pacer, "nsx", holders=2)
    assert pacer.acquire("esx", "e1", "run-1").granted
    assert pacer.has_room("vcenter")


def test_a_slot_whose_holder_vanished_frees_itself_after_its_ttl(ledger: Ledger) -> None:
    clock = Clock()
    pacer = Pacer(ledger, POLICY, clock=clock)
    close_limit(pacer, "nsx", holders=2)  # limit 1
    assert not pacer.acquire("nsx", "new", "run-1").granted
    clock.now += 61
    assert pacer.has_room("nsx")
    assert pacer.acquire("nsx", "new", "run-1").granted
    assert [s.in_flight for s in pacer.states()] == [1]


def test_the_end_of_a_run_releases_what_it_still_holds(ledger: Ledger) -> None:
    pacer = Pacer(ledger, POLICY)
    for i in range(3):
        pacer.acquire("nsx", f"a{i}", "run-a")
    pacer.acquire("nsx", "b0", "run-b")
    assert pacer.release_run("run-a") == 3
    assert pacer.states()[0].in_flight == 1
    assert not pacer.release("a0")


def test_the_limit_is_shared_by_every_pacer_on_the_ledger(ledger_url: str) -> None:
    """Two workers (two Pacer objects, two engines' worth of connections) see one limit."""
    first, second = Pacer(Ledger(ledger_url), POLICY), Pacer(Ledger(ledger_url), POLICY)
    close_limit(first, "nsx", holders=4)
    assert second.states()[0].limit == 2.0
    assert not second.acquire("nsx", "x", "run-1").granted


def test_accepted_starts_reopen_a_full_limit_step_by_step(ledger: Ledger) -> None:
    pacer = Pacer(ledger, POLICY)
    close_limit(pacer, "nsx", holders=4)  # limit 2, 4 held
    for i in range(2, 4):
        pacer.release(f"held-{i}")
    for _ in range(3):
        pacer.accepted("nsx")  # 2 in flight = full: 2 -> 2.5 -> 2.9 -> 3.24
    assert 3.2 < (pacer.states()[0].limit or 0) < 3.3
    assert pacer.acquire("nsx", "third", "run-1").granted


def test_the_ceiling_bounds_an_open_service(ledger: Ledger) -> None:
    """The pool's size, copied in: never more slots than that, though the service refuses nothing."""
    pacer = Pacer(ledger, POLICY)
    pacer.set_ceilings({"nsx": 2, "esx": None}, "test")
    assert pacer.acquire("nsx", "a", "run-1").granted and pacer.acquire("nsx", "b", "run-1").granted
    decision = pacer.acquire("nsx", "c", "run-1")
    assert (decision.granted, decision.in_flight, decision.slots, decision.ceiling) == (False, 2, 2, 2)
    assert decision.at_ceiling
    assert not pacer.has_room("nsx")
    assert pacer.acquire("nsx", "a", "run-1").granted  # a holder that comes back keeps its slot
    pacer.release("a")
    assert pacer.has_room("nsx") and pacer.acquire("nsx", "c", "run-1").granted
    assert pacer.ceiling("esx") is None and pacer.has_room("esx")
    assert {(s.service, s.ceiling, s.in_flight) for s in pacer.states()} == {("nsx", 2, 2)}


def test_the_lower_of_the_ceiling_and_a_closed_limit_binds(ledger: Ledger) -> None:
    pacer = Pacer(ledger, POLICY)
    close_limit(pacer, "nsx", holders=8)  # limit 4
    pacer.set_ceilings({"nsx": 6}, "test")
    decision = pacer.acquire("nsx", "new", "run-1")
    assert (decision.granted, decision.slots, decision.at_ceiling) == (False, 4, False)
    pacer.set_ceilings({"nsx": 3}, "test")  # the pool lowered below the limit
    for i in range(5):
        pacer.release(f"held-{i}")
    assert not pacer.has_room("nsx")  # 3 held, ceiling 3
    assert pacer.acquire("nsx", "new", "run-1").at_ceiling
    pacer.set_ceilings({"nsx": None}, "test")  # the pool removed: the limit alone
    assert pacer.ceiling("nsx") is None and pacer.acquire("nsx", "new", "run-1").granted


def test_a_new_holder_yields_to_a_later_phase_but_a_holder_keeps_its_slot(ledger: Ledger) -> None:
    pacer = Pacer(ledger, POLICY)
    assert pacer.acquire("vcenter", "kept", "run-1").granted
    decision = pacer.acquire("vcenter", "new", "run-1", yield_to_waiters=True)
    assert (decision.granted, decision.yielded) == (False, True)
    assert pacer.acquire("vcenter", "kept", "run-1", yield_to_waiters=True).granted
    assert [s.in_flight for s in pacer.states()] == [1]


def test_release_prefix_takes_one_sddcs_slots_only(ledger: Ledger) -> None:
    """Holders are rollout/wave/sddc/op/host; `_` and `%` in a name are not wildcards."""
    pacer = Pacer(ledger, POLICY)
    for holder in ("r_1/w/sddc-0001/nsx/-", "r_1/w/sddc-0001/host_enter/h1", "r_1/w/sddc-0002/nsx/-"):
        assert pacer.acquire("nsx", holder, "run-1").granted
    assert pacer.acquire("nsx", "rx1/w/sddc-0001/nsx/-", "run-1").granted
    assert pacer.release_prefix("r_1/w/sddc-0001/") == 2
    assert pacer.states()[0].in_flight == 2


def _grab(url: str, holder: str, barrier: Any, out: Any) -> None:
    # A child stuck for 25 s prints where (pytest shows it) and exits, instead of hanging.
    faulthandler.dump_traceback_later(25, exit=True)
    barrier.wait(20)
    out.put(Pacer(Ledger(url), POLICY).acquire("nsx", holder, "run-1").granted)
    faulthandler.cancel_dump_traceback_later()


def test_concurrent_processes_never_exceed_the_limit(ledger_url: str) -> None:
    pacer = Pacer(Ledger(ledger_url), POLICY)
    close_limit(pacer, "nsx", holders=6)  # limit 3
    for i in range(6):
        pacer.release(f"held-{i}")
    # spawn, not fork: a child forked while another thread of this test process (left by an
    # earlier test) was inside SQLite can hang in its first connect
    ctx = multiprocessing.get_context("spawn")
    n = 8
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(ledger_url, f"p{i}", barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    granted = [out.get(timeout=5) for _ in range(n)]
    assert granted.count(True) == 3
    assert pacer.states()[0].in_flight == 3
