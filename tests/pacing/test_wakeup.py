"""Who a slot given back in this process goes to (rce_lib.pacing.wakeup), without a ledger."""

from __future__ import annotations

import asyncio

from rce_lib.pacing import wakeup


def test_a_later_phase_then_the_sddc_with_most_hosts_left_is_woken_first() -> None:
    """Longest remaining work first at the bottleneck: among NSX waiters the 8-host SDDC goes
    before the 2-host one that waited longer; a hosts phase outranks every NSX waiter."""

    async def scenario() -> list[str]:
        woken: list[str] = []

        async def wait(name: str, rank: int) -> None:
            if await wakeup.given_back_or_timeout("nsx", 10.0, rank):
                woken.append(name)

        waiters = [asyncio.ensure_future(wait("nsx, 2 hosts", wakeup.rank(3, 2)))]
        await asyncio.sleep(0.05)
        waiters.append(asyncio.ensure_future(wait("nsx, 8 hosts", wakeup.rank(3, 8))))
        waiters.append(asyncio.ensure_future(wait("hosts, 1 left", wakeup.rank(4, 1))))
        await asyncio.sleep(0.05)
        assert wakeup.waiting("nsx") == 3
        assert wakeup.outranked("nsx", wakeup.rank(3, 7)) and not wakeup.outranked("nsx", wakeup.rank(4, 1))
        for _ in waiters:
            wakeup.given_back("nsx")
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
        return woken

    assert asyncio.run(scenario()) == ["hosts, 1 left", "nsx, 8 hosts", "nsx, 2 hosts"]


def test_a_rank_keeps_the_order_of_phases_whatever_the_host_count() -> None:
    assert wakeup.rank(3, 10_000) < wakeup.rank(4, 0)
    assert wakeup.rank(3, -1) == wakeup.rank(3, 0) < wakeup.rank(3, 1)
