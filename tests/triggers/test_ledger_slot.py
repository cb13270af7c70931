"""LedgerSlotTrigger: fires only once the run has room for another SDDC."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rce_lib.ledger import Ledger, Phase
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger

R, W, RUN = "rollout-a", "wave-a", "run-1"


def _trigger(url: str, limit: int = 1) -> LedgerSlotTrigger:
    return LedgerSlotTrigger(ledger_url=url, rollout=R, wave=W, run_id=RUN, limit=limit, poll_s=0.05)


def test_serialize_round_trips_exactly(tmp_path: Path) -> None:
    trigger = _trigger(f"sqlite:///{tmp_path}/l.db", limit=3)
    classpath, kwargs = trigger.serialize()
    assert classpath == "rce_lib.triggers.ledger_slot.LedgerSlotTrigger"
    again = LedgerSlotTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)


def test_waits_while_full_and_fires_when_a_slot_frees(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    ledger = Ledger(url)
    assert ledger.admit(R, W, "sddc-1", RUN, limit=1)

    async def scenario() -> dict[str, object]:
        gen = _trigger(url).run()
        pending = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.5)
        assert not pending.done(), "fired while the run was full"
        await asyncio.to_thread(ledger.phase_succeeded, R, W, "sddc-1", RUN, Phase.POSTCHECK)
        event = await asyncio.wait_for(pending, timeout=5)
        await gen.aclose()
        return dict(event.payload)

    payload = asyncio.run(scenario())
    assert payload == {"status": "slot_free", "in_flight": 0, "limit": 1}
