"""ServiceSlotTrigger: fires only once the service's adaptive limit has room."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rce_lib.ledger import Ledger
from rce_lib.pacing import wakeup
from rce_lib.pacing.store import Pacer
from rce_lib.triggers.service_slot import ServiceSlotTrigger


def test_serialize_round_trips_exactly(tmp_path: Path) -> None:
    trigger = ServiceSlotTrigger(ledger_url=f"sqlite:///{tmp_path}/l.db", service="nsx", poll_s=2.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "rce_lib.triggers.service_slot.ServiceSlotTrigger"
    assert ServiceSlotTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_waits_while_the_limit_is_full_and_fires_when_a_slot_is_given_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    pacer = Pacer(Ledger(url))
    for holder in ("a", "b"):
        assert pacer.acquire("nsx", holder, "run-1").granted
    for _ in range(3):
        pacer.refused("nsx")  # limit 1, 2 held
    assert pacer.has_room("esx")

    async def scenario() -> dict[str, object]:
        gen = ServiceSlotTrigger(ledger_url=url, service="nsx", poll_s=0.05).run()
        pending = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.5)
        assert not pending.done(), "fired while the limit was full"
        await asyncio.to_thread(pacer.release, "a")
        await asyncio.sleep(0.3)
        assert not pending.done(), "fired with 1 held under a limit of 1"
        await asyncio.to_thread(pacer.release, "b")
        event = await asyncio.wait_for(pending, timeout=5)
        await gen.aclose()
        return dict(event.payload)

    assert asyncio.run(scenario()) == {"status": "room", "service": "nsx"}


def test_a_slot_given_back_in_this_process_wakes_the_longest_waiter_at_once(tmp_path: Path) -> None:
    """Poll every 60 s, yet the first waiter fires right after a release here; one release
    wakes one waiter, the second keeps waiting (its next poll would have seen a release
    elsewhere)."""
    url = f"sqlite:///{tmp_path}/l.db"
    pacer = Pacer(Ledger(url))
    pacer.set_ceilings({"nsx": 1}, "test")
    assert pacer.acquire("nsx", "a", "run-1").granted

    async def scenario() -> tuple[float, bool]:
        first = ServiceSlotTrigger(ledger_url=url, service="nsx", poll_s=60).run()
        second = ServiceSlotTrigger(ledger_url=url, service="nsx", poll_s=60).run()
        one = asyncio.ensure_future(first.__anext__())
        await asyncio.sleep(0.3)
        two = asyncio.ensure_future(second.__anext__())
        await asyncio.sleep(0.3)
        assert wakeup.waiting("nsx") == 2 and not one.done() and not two.done()
        released = time.monotonic()
        await asyncio.to_thread(pacer.release, "a")
        await asyncio.wait_for(one, timeout=5)
        woke_after = time.monotonic() - released
        await asyncio.sleep(0.3)
        second_woken = two.done()
        two.cancel()
        await first.aclose()
        return woke_after, second_woken

    woke_after, second_woken = asyncio.run(scenario())
    assert woke_after < 2.0
    assert not second_woken
    assert wakeup.waiting("nsx") == 0


def test_a_slot_given_back_goes_to_the_latest_phase_waiting_first(tmp_path: Path) -> None:
    """A precheck waiting longer than a vCenter upgrade still lets it go first: feeding an SDDC
    on towards NSX (the bottleneck) beats starting one more SDDC. While the later phase waits,
    the precheck's trigger does not fire even with room."""
    url = f"sqlite:///{tmp_path}/l.db"
    pacer = Pacer(Ledger(url))
    pacer.set_ceilings({"vcenter": 1}, "test")
    assert pacer.acquire("vcenter", "a", "run-1").granted

    async def scenario() -> list[str]:
        fired: list[str] = []

        async def wait(name: str, rank: int) -> None:
            gen = ServiceSlotTrigger(ledger_url=url, service="vcenter", poll_s=60, rank=rank).run()
            await gen.__anext__()
            fired.append(name)
            await gen.aclose()

        precheck = asyncio.ensure_future(wait("precheck", 0))
        await asyncio.sleep(0.3)
        vcenter = asyncio.ensure_future(wait("upgrade_vcenter", 2))
        await asyncio.sleep(0.3)
        assert wakeup.outranked("vcenter", 0) and not wakeup.outranked("vcenter", 2)
        await asyncio.to_thread(pacer.release, "a")
        await asyncio.wait_for(vcenter, timeout=5)
        await asyncio.sleep(0.3)
        assert not precheck.done()  # room, but woken only by the next slot given back
        precheck.cancel()
        return fired

    assert asyncio.run(scenario()) == ["upgrade_vcenter"]
