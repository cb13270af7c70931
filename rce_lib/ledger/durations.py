"""How long each operation's downstream tasks took lately, fleet-wide.

A phase polls a task it just started from 1 s on, growing with the task's age and its
reported progress; for a 45-minute vCenter upgrade the early polls (1 s, 5 s...) only
learn that it has barely begun. With a typical duration from the tasks that ended
before, the first poll waits for half of it: progress is then worth reading, and the
next poll lands about where the task ends. Samples are a hint: a lost one (a race to
create the row) costs nothing but a few polls.
"""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from rce_lib.ledger import schema
from rce_lib.ledger.store import Ledger

KEEP = 20
MIN_SAMPLES = 3


class TaskDurations:
    """`record` a successful task's duration; `typical` is the median of the last `KEEP`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def record(self, op: str, seconds: float) -> None:
        if not seconds >= 0:  # also refuses NaN
            return
        table = schema.task_durations
        now = datetime.now(UTC)
        with self.ledger.transaction(write=True) as conn:
            row = conn.execute(select(table.c.samples).where(table.c.op == op).with_for_update()).first()
            samples = [*_samples(row[0] if row else "[]"), round(float(seconds), 3)][-KEEP:]
            body = json.dumps(samples)
            if row is not None:
                conn.execute(update(table).where(table.c.op == op).values(samples=body, updated_at=now))
                return
            try:
                with conn.begin_nested():
                    conn.execute(table.insert().values(op=op, samples=body, updated_at=now))
            except IntegrityError:
                return

    def typical(self, op: str) -> float | None:
        table = schema.task_durations
        with self.ledger.transaction(write=False) as conn:
            row = conn.execute(select(table.c.samples).where(table.c.op == op)).first()
        samples = _samples(row[0]) if row else []
        return statistics.median(samples) if len(samples) >= MIN_SAMPLES else None


def _samples(text: str) -> list[float]:
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [float(x) for x in data if isinstance(x, int | float) and not isinstance(x, bool) and x >= 0]
