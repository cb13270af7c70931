"""A ledger populated through the Ledger API with a controllable clock, for `rce status`.

status_ledger -> (Ledger, url, Clock): a SQLite ledger holding wave `w1` of rollout `r1`, run `run-1`:
    sddc-0001 done (precheck 10 s, snapshot 20 s, vcenter 100 s, nsx 50 s, hosts 300 s, postcheck 20 s),
    sddc-0002 done with the same durations, plus 2 s each,
    sddc-0003 running upgrade_vcenter,
    sddc-0004 failed for good in precheck (PRECHECK_BLOCKED), then rolled back,
    sddc-0005 pending (enrolled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rce_lib.ledger import Ledger, Phase, Status

ROLLOUT, WAVE, RUN = "r1", "w1", "run-1"
DURATIONS = {
    Phase.PRECHECK: 10.0,
    Phase.SNAPSHOT: 20.0,
    Phase.UPGRADE_VCENTER: 100.0,
    Phase.UPGRADE_NSX: 50.0,
    Phase.UPGRADE_HOSTS: 300.0,
    Phase.POSTCHECK: 20.0,
}


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def run_phases(ledger: Ledger, clock: Clock, sddc_id: str, phases: list[Phase], extra: float = 0.0) -> None:
    for phase in phases:
        ledger.phase_started(ROLLOUT, WAVE, sddc_id, RUN, phase)
        clock.advance(DURATIONS[phase] + extra)
        ledger.phase_succeeded(ROLLOUT, WAVE, sddc_id, RUN, phase)


def enroll(ledger: Ledger, sddc_id: str) -> None:
    ledger.upsert_progress(
        ROLLOUT,
        WAVE,
        sddc_id,
        RUN,
        phase=Phase.PRECHECK,
        status=Status.PENDING,
        source_version="1.25.0",
        target_version="1.26.0",
    )


@pytest.fixture
def status_ledger(tmp_path: Path) -> tuple[Ledger, str, Clock]:
    url = f"sqlite:///{tmp_path / 'rce_ledger.db'}"
    clock = Clock(datetime.now(UTC) - timedelta(hours=1))
    ledger = Ledger(url, clock=clock)
    ledger.ensure_schema()
    for sddc_id in ("sddc-0001", "sddc-0002", "sddc-0003", "sddc-0004", "sddc-0005"):
        enroll(ledger, sddc_id)
    ledger.append_event(
        ROLLOUT,
        WAVE,
        "cohort_resolved",
        run_id=RUN,
        data={
            "members": ["sddc-0001", "sddc-0002", "sddc-0003", "sddc-0004", "sddc-0005"],
            "canary": ["sddc-0001"],
            "max_parallel": 2,
            "excluded": [{"sddc_id": "sddc-0009", "reason": "ALREADY_AT_TARGET", "detail": "at 1.26.0"}],
        },
    )
    run_phases(ledger, clock, "sddc-0001", list(DURATIONS))
    run_phases(ledger, clock, "sddc-0002", list(DURATIONS), extra=2.0)
    run_phases(ledger, clock, "sddc-0003", [Phase.PRECHECK, Phase.SNAPSHOT])
    ledger.phase_started(ROLLOUT, WAVE, "sddc-0003", RUN, Phase.UPGRADE_VCENTER)
    ledger.phase_started(ROLLOUT, WAVE, "sddc-0004", RUN, Phase.PRECHECK)
    ledger.phase_failed(
        ROLLOUT,
        WAVE,
        "sddc-0004",
        RUN,
        Phase.PRECHECK,
        code="PRECHECK_BLOCKED",
        message="host sddc-0004-c1-h1: disk space below 10%",
        retryable=False,
    )
    return ledger, url, clock
