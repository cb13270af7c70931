"""The shared release cache: fresh bodies are served, stale or unreadable ones are not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from rce_lib.ledger import Ledger, schema
from rce_lib.ledger.release_cache import ReleaseCache

BODY = {
    "version": "1.26.0",
    "components": {"vcenter": "a", "nsx": "b", "esx": "c"},
    "upgrade_from": ["1.25.0"],
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_fresh_release_is_served_to_every_reader(ledger: Ledger) -> None:
    clock = Clock()
    ReleaseCache(ledger, ttl_s=300, clock=clock).put("1.26.0", BODY)
    clock.now += timedelta(seconds=299)
    assert ReleaseCache(Ledger(ledger.url), ttl_s=300, clock=clock).get("1.26.0") == BODY
    assert ReleaseCache(ledger, ttl_s=300, clock=clock).get("1.25.0") is None


def test_a_stale_release_is_not_served_and_a_new_read_replaces_it(ledger: Ledger) -> None:
    clock = Clock()
    cache = ReleaseCache(ledger, ttl_s=300, clock=clock)
    cache.put("1.26.0", BODY)
    clock.now += timedelta(seconds=301)
    assert cache.get("1.26.0") is None
    changed = {**BODY, "components": {"vcenter": "a2", "nsx": "b", "esx": "c"}}
    cache.put("1.26.0", changed)
    assert cache.get("1.26.0") == changed


def test_an_unreadable_cached_body_is_ignored(ledger: Ledger) -> None:
    cache = ReleaseCache(ledger)
    cache.put("1.26.0", BODY)
    table = schema.release_cache
    for junk in ("{not json", "[1, 2]"):
        with ledger.transaction(write=True) as conn:
            conn.execute(update(table).values(body=junk))
        assert cache.get("1.26.0") is None
