"""SDDC claims: one (rollout, wave) holds an SDDC at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rce_lib.ledger import EventKind, Ledger

R = "r-2025-06"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_free_sddc_is_granted_and_listed(ledger: Ledger) -> None:
    result = ledger.claim("sddc-1", R, "wave-1", "run-a")
    assert result.granted
    assert (result.holder.rollout, result.holder.wave, result.holder.run_id) == (R, "wave-1", "run-a")
    assert result.holder.expires_at is None
    assert ledger.active_claims() == {"sddc-1": result.holder}


def test_new_run_of_the_same_wave_takes_over(ledger: Ledger) -> None:
    ledger.claim("sddc-1", R, "wave-1", "run-a")
    result = ledger.claim("sddc-1", R, "wave-1", "run-b")
    assert result.granted and result.holder.run_id == "run-b"
    assert ledger.active_claims()["sddc-1"].run_id == "run-b"
    granted = ledger.events(kinds=[EventKind.CLAIM_GRANTED])
    assert len(granted) == 2 and granted[1].data["previous"]["run_id"] == "run-a"


def test_other_wave_is_refused_and_told_the_holder(ledger: Ledger) -> None:
    ledger.claim("sddc-1", R, "wave-1", "run-a")
    refused = ledger.claim("sddc-1", R, "wave-2", "run-x")
    assert not refused.granted
    assert (refused.holder.wave, refused.holder.run_id) == ("wave-1", "run-a")
    other_rollout = ledger.claim("sddc-1", "r-other", "wave-1", "run-y")
    assert not other_rollout.granted
    assert ledger.active_claims()["sddc-1"].wave == "wave-1"
    evs = ledger.events(kinds=[EventKind.CLAIM_REFUSED])
    assert [(e.wave, e.sddc_id) for e in evs] == [("wave-2", "sddc-1"), ("wave-1", "sddc-1")]
    assert evs[0].data["holder"]["wave"] == "wave-1"


def test_expired_claim_can_be_taken_by_another_wave(ledger_url: str) -> None:
    clock = FakeClock()
    ledger = Ledger(ledger_url, clock=clock)
    assert ledger.claim("sddc-1", R, "wave-1", "run-a", ttl_s=60).granted
    clock.now += timedelta(seconds=59)
    assert not ledger.claim("sddc-1", R, "wave-2", "run-b").granted
    assert "sddc-1" in ledger.active_claims()
    clock.now += timedelta(seconds=1)
    assert ledger.active_claims() == {}
    taken = ledger.claim("sddc-1", R, "wave-2", "run-b")
    assert taken.granted and taken.holder.wave == "wave-2" and taken.holder.expires_at is None
    assert ledger.active_claims()["sddc-1"].wave == "wave-2"


def test_release_only_by_the_holding_wave(ledger: Ledger) -> None:
    ledger.claim("sddc-1", R, "wave-1", "run-a")
    assert ledger.release("sddc-1", R, "wave-2") is False
    assert "sddc-1" in ledger.active_claims()
    assert ledger.release("sddc-1", R, "wave-1", "run-a") is True
    assert ledger.active_claims() == {}
    assert ledger.release("sddc-1", R, "wave-1") is False
    assert ledger.claim("sddc-1", R, "wave-2", "run-b").granted
    assert [e.kind for e in ledger.events(kinds=[EventKind.CLAIM_RELEASED])] == [EventKind.CLAIM_RELEASED]
