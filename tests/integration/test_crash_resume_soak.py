"""The crash-resume soak (rce_lib/devenv/soak.py), short mode: a wave of 30 upgradable SDDCs
under a real `airflow standalone` against the simulator while the scheduler and the triggerer
(where every phase runs, by default) are killed with SIGKILL at least 10 times on a seeded
schedule; each is restarted and whatever failed is cleared through the REST API
(failed task instances only). The run must then succeed from the fleet's real state.

Nothing is mocked: real Airflow processes, the real simulator, the real ledger. The long mode
is the same driver: `rce soak --minutes 30` (README, "Crash-resume soak").
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rce_lib.devenv.soak import TRIGGERER_KINDS, Soak, SoakResult, SoakSettings, processes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SDDCS = 30
KILLS = 10
SEED = 7


def test_a_wave_survives_ten_kills_of_its_airflow_components(tmp_path: Path) -> None:
    began = time.monotonic()
    soak = Soak(
        SoakSettings(
            home=tmp_path / "soak",
            sddcs=SDDCS,
            kills=KILLS,
            seed=SEED,
            timeout_s=540,
            log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True),
        )
    )
    try:
        result: SoakResult = soak.run()
    finally:
        sessions = soak.deployment.sessions if soak.deployment else set()
        if soak.sim_group is not None:
            sessions.add(soak.sim_group.pid)
        left = processes(sessions)
    print(result.table(), flush=True)
    print(
        f"soak test took {time.monotonic() - began:.0f} s; logs in {tmp_path / 'soak' / 'logs'}", flush=True
    )

    # every process of every session the soak started is gone, whatever happened
    assert left == [], f"processes left behind: {[(p.pid, p.title) for p in left]}"
    assert not result.error, f"the soak did not run to its end: {result.error}"
    # the soak really soaked: the kills landed while the wave ran, of more than one kind
    assert len(result.kills) >= KILLS, f"only {len(result.kills)} kills landed: {result.kills_by_kind}"
    assert all(result.kills_by_kind[kind] >= 1 for kind in TRIGGERER_KINDS), result.kills_by_kind
    assert len(result.cohort) == SDDCS
    # the pass criteria, each with what it found
    assert result.run_state == "success", f"the wave run ended {result.run_state}"
    assert result.not_at_target == {}, f"SDDCs not at the target: {result.not_at_target}"
    assert result.untouched_changed == [], f"SDDCs outside the cohort changed: {result.untouched_changed}"
    assert result.started_twice == [], f"downstream steps started more than once: {result.started_twice}"
    assert result.duplicate_starts == 0, f"duplicate starts: {result.duplicate_details}"
    assert result.retry_after_violations == 0, f"Retry-After violations: {result.violation_details}"
    assert result.hosts_in_maintenance == [], f"hosts left in maintenance: {result.hosts_in_maintenance}"
    assert result.active_tasks_left == [], f"downstream tasks still running: {result.active_tasks_left}"
    assert result.ledger_not_done == {}, f"ledger records not succeeded: {result.ledger_not_done}"
    assert result.drift == [], "the reconcile sweep found drift:\n" + "\n".join(result.drift)
    assert result.passed, result.failures()
