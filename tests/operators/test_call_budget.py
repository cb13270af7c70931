"""API calls per phase, against the real simulator (issue 6: a bounded number of calls per
SDDC). Each phase reads the real SDDC once before acting: the window check, the in-flight
reconciliation and the first decision share that read. After its own downstream task
succeeded a phase derives the SDDC from the task (sddc_after) instead of reading it again,
also when it resumes from the triggerer; the hosts phase reads once more before declaring
itself done. Task polls follow rce_lib.triggers.backoff."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.durations import TaskDurations
from rce_lib.operators.base import PhaseError
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.components import NsxUpgradeOperator, VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.operators.snapshot import SnapshotOperator
from rce_lib.triggers.backoff import polls_bound
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from tests.waiting import first_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W, RUN, TARGET = "r", "w", "manual__2026-11-26", "1.26.0"
QUICK = {"inline_wait_s": 20.0, "resume_delay_s": 0.0, "poll_min_s": 0.05}
SDDC_GET = ("GET", "/api/v1/sddcs/{sddc_id}")
RELEASE_GET = ("GET", "/api/v1/releases/{version}")
TASK_GET = ("GET", "/api/v1/tasks/{task_id}")


class Ti:
    try_number = 1


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    server = sim_factory(size=4, time_scale=6000)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    return server


def _enrolled(fleet: Any, ledger: Ledger, sddc_id: str) -> dict[str, Any]:
    sddc: dict[str, Any] = fleet.sddc(sddc_id)
    assert sddc["version"] == "1.25.0"
    _enroll(ledger, R, W, sddc_id, RUN, TARGET, "1.25.0")
    return sddc


def _calls(fleet: Any) -> Counter[tuple[str, str]]:
    calls: Counter[tuple[str, str]] = Counter()
    for r in fleet.counters()["requests"]:
        if r["route"].startswith("/api/"):
            calls[r["method"], r["route"]] += int(r["count"])
    return calls


def _kwargs(sddc_id: str, task_id: str) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "sddc_id": sddc_id,
        "target_version": TARGET,
        "rollout": R,
        "wave": W,
        **QUICK,
    }


@pytest.mark.parametrize("windows", [False, True])
def test_a_phase_reads_the_sddc_once_before_acting(fleet: Any, ledger: Ledger, windows: bool) -> None:
    """vCenter (its task ends within the inline wait): one GET of the SDDC shared by the
    window check, the reconciliation and the first decision (the goal then holds by the
    task's own success); the target and source releases once each; one start."""
    _enrolled(fleet, ledger, "sddc-0001")
    if windows:  # open since an hour, 5 h left
        opened = datetime.now(UTC) - timedelta(hours=1)
        fleet.set_window(
            "sddc-0001", {"day_of_week": opened.weekday(), "start_hour_utc": opened.hour, "duration_hours": 6}
        )
    fleet.reset_counters()
    op = VcenterUpgradeOperator(
        respect_maintenance_windows=windows, **_kwargs("sddc-0001", "upgrade_vcenter")
    )
    op.execute({"run_id": RUN, "ti": Ti()})
    calls, polls = _calls(fleet), fleet.counters()["task_polls"]
    assert calls[SDDC_GET] == 1, calls
    assert calls[RELEASE_GET] == 2, calls
    assert calls["POST", "/api/v1/sddcs/{sddc_id}/components/{component}/upgrade"] == 1, calls
    assert polls["UPGRADE_VCENTER"] <= polls_bound(2700 / 6000, minimum=0.05), polls
    assert sum(calls.values()) == calls[SDDC_GET] + calls[RELEASE_GET] + 1 + calls[TASK_GET]


def test_releases_are_shared_by_phases_until_the_cache_is_stale(
    fleet: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target and source releases one phase read serve the next phases (of any SDDC) for
    rce_lib.ledger.release_cache's TTL; after it, a phase reads them again."""
    _enrolled(fleet, ledger, "sddc-0001")
    _enrolled(fleet, ledger, "sddc-0002")
    context = {"run_id": RUN, "ti": Ti()}
    fleet.reset_counters()
    PrecheckOperator(**_kwargs("sddc-0001", "precheck")).execute(context)
    PrecheckOperator(**_kwargs("sddc-0002", "precheck")).execute(context)
    assert _calls(fleet)[RELEASE_GET] == 2
    monkeypatch.setattr("rce_lib.ledger.release_cache.DEFAULT_TTL_S", 0.0)
    fleet.reset_counters()
    SnapshotOperator(**_kwargs("sddc-0002", "snapshot")).execute(context)
    assert _calls(fleet)[RELEASE_GET] == 2


def test_the_first_poll_waits_for_half_the_typical_duration(
    sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    """With how long vCenter upgrades took lately (rce_lib.ledger.durations), the early polls
    that would only see a task barely begun are skipped. The upgrade lasts 2.7 s here (not
    0.45 s): long enough that a slow poll on a loaded machine cannot hide the early ones."""
    scale = 1000
    fleet = sim_factory(size=4, time_scale=scale)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(fleet.url, fleet.token))
    _enrolled(fleet, ledger, "sddc-0001")
    _enrolled(fleet, ledger, "sddc-0002")
    context = {"run_id": RUN, "ti": Ti()}
    slow = {"poll_min_s": 0.02}  # many early polls without a hint
    for sddc_id in ("sddc-0001", "sddc-0002"):
        PrecheckOperator(**_kwargs(sddc_id, "precheck")).execute(context)
        SnapshotOperator(**_kwargs(sddc_id, "snapshot")).execute(context)
    fleet.reset_counters()
    VcenterUpgradeOperator(**{**_kwargs("sddc-0001", "upgrade_vcenter"), **slow}).execute(context)
    without = fleet.counters()["task_polls"]["UPGRADE_VCENTER"]
    durations = TaskDurations(ledger)
    assert durations.typical("vcenter") is None  # one sample so far
    for _ in range(2):
        durations.record("vcenter", 2700 / scale)
    fleet.reset_counters()
    VcenterUpgradeOperator(**{**_kwargs("sddc-0002", "upgrade_vcenter"), **slow}).execute(context)
    with_hint = fleet.counters()["task_polls"]["UPGRADE_VCENTER"]
    assert with_hint < without, (with_hint, without)
    assert with_hint <= 3, with_hint


def test_precheck_costs_one_read_of_each_kind(fleet: Any, ledger: Ledger) -> None:
    _enrolled(fleet, ledger, "sddc-0002")
    fleet.reset_counters()
    PrecheckOperator(**_kwargs("sddc-0002", "precheck")).execute({"run_id": RUN, "ti": Ti()})
    calls = _calls(fleet)
    assert calls[SDDC_GET] == 1 and calls[RELEASE_GET] == 2, calls
    assert fleet.counters()["task_polls"]["PRECHECK"] <= polls_bound(120 / 6000, minimum=0.05)


def test_the_hosts_phase_reads_the_sddc_once_per_host(fleet: Any, ledger: Ledger) -> None:
    """Three tasks per host are inherent (enter maintenance, upgrade, exit); GETs of the SDDC
    are one before acting and one after each host is done: the next host is taken out of its
    cluster on the real state, and the last read is the one the phase is declared done on."""
    sddc = _enrolled(fleet, ledger, "sddc-0001")
    hosts = len(sddc["hosts"])
    assert hosts >= 2
    context = {"run_id": RUN, "ti": Ti()}
    PrecheckOperator(**_kwargs("sddc-0001", "precheck")).execute(context)
    SnapshotOperator(**_kwargs("sddc-0001", "snapshot")).execute(context)
    VcenterUpgradeOperator(**_kwargs("sddc-0001", "upgrade_vcenter")).execute(context)
    NsxUpgradeOperator(**_kwargs("sddc-0001", "upgrade_nsx")).execute(context)
    fleet.reset_counters()
    op = HostsUpgradeOperator(**_kwargs("sddc-0001", "upgrade_hosts"))
    op.execute({"run_id": RUN, "ti": Ti()})
    counters = fleet.counters()
    calls, created = _calls(fleet), counters["tasks_created"]
    assert created == {"HOST_MAINTENANCE": 2 * hosts, "UPGRADE_HOST": hosts}, created
    assert counters["mutating_calls"] == 3 * hosts
    assert calls[SDDC_GET] == 1 + hosts, calls
    assert calls[RELEASE_GET] == 0, calls  # both releases were read by the earlier phases (cached)
    assert all(
        h["version"] == fleet.sddc("sddc-0001")["hosts"][0]["version"]
        for h in fleet.sddc("sddc-0001")["hosts"]
    )
    polls = counters["task_polls"]
    assert polls["UPGRADE_HOST"] <= hosts * polls_bound(1200 / 6000, minimum=0.05), polls
    assert polls["HOST_MAINTENANCE"] <= 2 * hosts * polls_bound(180 / 6000, minimum=0.05), polls


@pytest.mark.usefixtures("worker_resumes")
def test_a_deferred_phase_polls_on_from_the_tasks_age_and_resumes_without_reads(
    fleet: Any, ledger: Ledger
) -> None:
    """The trigger goes on with the inline wait's schedule (started_at is the task's start),
    no earlier than resume_delay_s after the deferral; the resumed execution sends nothing:
    the echo brings the target release and the SDDC this phase read when it began, and the
    task's success says the component is at the target build (the next phase reads)."""
    _enrolled(fleet, ledger, "sddc-0003")
    context = {"run_id": RUN, "ti": Ti()}
    kwargs = {**_kwargs("sddc-0003", "upgrade_vcenter"), "inline_wait_s": 0.0, "resume_delay_s": 0.1}
    op = VcenterUpgradeOperator(**kwargs)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DownstreamTaskTrigger)
    assert before <= trigger.started_at <= time.time()
    assert trigger.first_poll_s >= 0.1
    assert trigger.poll_max_s is None  # no fixed cap: polls grow with log(duration)
    assert trigger.echo["release"]["version"] == TARGET
    fleet.reset_counters()
    event = asyncio.run(first_event(trigger, 30))
    assert event.payload["status"] == "terminal"
    polls = fleet.counters()["task_polls"]["UPGRADE_VCENTER"]
    assert polls <= polls_bound(2700 / 6000, minimum=0.05), polls
    fleet.reset_counters()
    op.execute_complete(context, event.payload)
    calls = _calls(fleet)
    assert calls == {}, calls
    assert ledger.get(R, W, "sddc-0003").phase.value == "upgrade_vcenter"  # type: ignore[union-attr]


@pytest.mark.usefixtures("worker_resumes")
def test_a_host_disconnected_meanwhile_stops_the_phase_before_it_is_taken_out(
    fleet: Any, ledger: Ledger
) -> None:
    """Every task defers (no inline wait): the resumptions derive each host's state from its
    own tasks (no GET per step), but the SDDC is read again before the next host enters
    maintenance, so a host that dropped out meanwhile stops the phase (retryable, no
    verdict) before anything else is touched."""
    sddc = _enrolled(fleet, ledger, "sddc-0001")
    context = {"run_id": RUN, "ti": Ti()}
    for phase in (PrecheckOperator, SnapshotOperator, VcenterUpgradeOperator, NsxUpgradeOperator):
        phase(**_kwargs("sddc-0001", phase.phase)).execute(context)
    hosts = sorted(sddc["hosts"], key=lambda h: (h["cluster_id"], h["id"]))
    last = hosts[-1]["id"]
    fleet.reset_counters()
    op = HostsUpgradeOperator(**{**_kwargs("sddc-0001", "upgrade_hosts"), "inline_wait_s": 0.0, "retries": 2})
    call: Any = lambda: op.execute(context)  # noqa: E731
    steps = 0
    with pytest.raises(PhaseError, match="HOST_DISCONNECTED"):
        while True:
            try:
                call()
            except TaskDeferred as deferred:
                steps += 1
                if steps == 1:  # the first host is entering maintenance: the last one drops out
                    fleet.drift(kind="host_disconnected", sddc_id="sddc-0001", host_id=last)
                event = asyncio.run(first_event(deferred.trigger, 30))
                call = lambda event=event: op.execute_complete(context, event.payload)  # noqa: E731
    assert steps == 3  # the first host: enter, upgrade, exit
    assert _calls(fleet)[SDDC_GET] == 2  # before acting, and after the first host
    tasks = fleet.request("GET", "/api/v1/sddcs/sddc-0001/tasks").json()["items"]
    assert not [t for t in tasks if t["host_id"] == last]
