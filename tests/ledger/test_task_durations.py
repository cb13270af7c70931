"""Recent task durations per operation: a median once there are enough samples, the last 20
kept, junk ignored."""

from __future__ import annotations

import math

from sqlalchemy import update

from rce_lib.ledger import Ledger, schema
from rce_lib.ledger.durations import KEEP, TaskDurations


def test_no_typical_duration_before_three_samples(ledger: Ledger) -> None:
    durations = TaskDurations(ledger)
    assert durations.typical("vcenter") is None
    durations.record("vcenter", 40.0)
    durations.record("vcenter", 50.0)
    assert durations.typical("vcenter") is None
    durations.record("vcenter", 45.0)
    assert durations.typical("vcenter") == 45.0
    assert durations.typical("nsx") is None


def test_only_the_last_samples_count(ledger: Ledger) -> None:
    durations = TaskDurations(ledger)
    for _ in range(KEEP):
        durations.record("nsx", 1000.0)
    for _ in range(KEEP // 2 + 1):
        durations.record("nsx", 10.0)
    assert durations.typical("nsx") == 10.0


def test_nonsense_samples_are_refused_and_junk_is_ignored(ledger: Ledger) -> None:
    durations = TaskDurations(ledger)
    for bad in (-1.0, math.nan):
        durations.record("snapshot", bad)
    assert durations.typical("snapshot") is None
    for _ in range(3):
        durations.record("snapshot", 5.0)
    with ledger.transaction(write=True) as conn:
        conn.execute(update(schema.task_durations).values(samples='[5, "x", -3, true, 7, 9]'))
    assert durations.typical("snapshot") == 7.0
    with ledger.transaction(write=True) as conn:
        conn.execute(update(schema.task_durations).values(samples="{broken"))
    assert durations.typical("snapshot") is None
