"""The batch-serial baseline of `rce bench`: what a plain script does without an engine.

Like Ansible's `serial: k`: the fleet is cut into batches of k SDDCs (by id); the k members
of a batch run side by side (one thread each), every SDDC's phases in order (precheck,
snapshot, vCenter, NSX, then each host in turn: enter maintenance, upgrade, exit
maintenance; then a postcheck health read), and the next batch starts only when the
slowest member of this one is done. Its makespan against the engine's is the speed-up
the bench prints.

It is fair to the baseline on purpose: members of a batch do not wait for each other
between phases (Ansible's default linear strategy would), tasks are polled every
`poll_s` real seconds (0.5 s = 30 sim-s at the standard time scale), and it uses the
project's own sync hook, so it honours Retry-After and capacity refusals (503) exactly
as the engine does: the hook's retry policies, and after a spent mutation budget a wait
of Retry-After and the same start again (same Idempotency-Key: a replay, never a second
start). No Airflow: the hook reads its connection from AIRFLOW_CONN_<ID>
(`sim_connection`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.api.models import HealthStatus, Task, TaskStatus
from rce_lib.errors import RceError, Reason, ThrottledError

if TYPE_CHECKING:
    from rce_lib.hooks.sddc_api import SddcApiHook, StartResult

CONN_ID = "rce_bench_baseline"
ROLLOUT = "bench-baseline"
DEFAULT_POLL_S = 0.5


class SddcOutcome(BaseModel):
    """How one SDDC of the baseline ended, and when (seconds since the baseline started)."""

    model_config = ConfigDict(frozen=True)

    sddc_id: str
    batch: int
    ok: bool
    started_s: float
    ended_s: float
    hosts: int = 0
    error: str | None = None


class BatchOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    sddc_ids: list[str]
    started_s: float
    ended_s: float


class BaselineResult(BaseModel):
    """What the baseline did: its makespan is first request to the last SDDC done."""

    model_config = ConfigDict(frozen=True)

    batch_size: int = Field(ge=1)
    poll_s: float
    sddcs: int
    upgraded: int
    failed: dict[str, str]
    makespan_s: float
    batches: list[BatchOutcome]
    outcomes: list[SddcOutcome]
    cpu_s: float = Field(description="CPU-seconds of this process (all threads) during the baseline")
    state: Literal["done", "timeout", "interrupted"] = "done"


class _Stopped(Exception):
    """The baseline was interrupted or ran out of time."""


@contextlib.contextmanager
def sim_connection(url: str, token: str, conn_id: str = CONN_ID) -> Iterator[str]:
    """Make `conn_id` point at the simulator for this process (AIRFLOW_CONN_<ID>); restored after."""
    from rce_lib.devenv.airflow_local import sddc_api_conn

    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    old = os.environ.get(name)
    os.environ[name] = sddc_api_conn(url, token)
    try:
        yield conn_id
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class _Driver:
    """One baseline run: shared clock, stop flag and hook construction for the member threads."""

    def __init__(
        self,
        *,
        conn_id: str,
        target_version: str,
        poll_s: float,
        deadline: float,
        hook_factory: Callable[[Callable[[float], None]], SddcApiHook] | None,
    ) -> None:
        self.conn_id = conn_id
        self.target = target_version
        self.poll_s = poll_s
        self.deadline = deadline
        self.stop = threading.Event()
        self._hook_factory = hook_factory

    def hook(self) -> SddcApiHook:
        if self._hook_factory is not None:
            return self._hook_factory(self.sleep)
        from rce_lib.hooks.sddc_api import SddcApiHook

        return SddcApiHook(self.conn_id, sleep=self.sleep)

    def sleep(self, seconds: float) -> None:
        """Every wait of the run (polls and the hook's retries) ends early on stop."""
        if self.stop.wait(max(0.0, seconds)) or time.monotonic() > self.deadline:
            raise _Stopped("stopped")

    def key(self, sddc_id: str, phase: str, host_id: str | None = None) -> str:
        parts = KeyParts(
            rollout=ROLLOUT,
            wave="serial",
            sddc_id=sddc_id,
            phase=phase,
            host_id=host_id,
            target_version=self.target,
        )
        return idempotency_key(parts)

    def start(self, call: Callable[[], StartResult]) -> Task:
        """A start, through the hook's mutation policy (Retry-After, 503 at capacity); when that
        budget is spent, wait the last Retry-After and replay it (same key) until the deadline."""
        while True:
            try:
                return call().task
            except ThrottledError as err:
                if err.reason is not Reason.RETRY_BUDGET_EXHAUSTED:
                    raise
                self.sleep(err.retry_after or 1.0)

    def wait(self, hook: SddcApiHook, task: Task) -> Task:
        while not task.terminal:
            self.sleep(self.poll_s)
            task = hook.get_task(task.id)
        if task.status is not TaskStatus.SUCCEEDED:
            detail = f": {task.error.message}" if task.error is not None else ""
            raise RceError(f"{task.type.value} task {task.id} {task.status.value}{detail}")
        return task

    def host_steps(self, hook: SddcApiHook, sddc_id: str, host_id: str) -> list[Callable[[], StartResult]]:
        """One host, as the contract allows it: enter maintenance, upgrade, exit maintenance."""

        def enter() -> StartResult:
            return hook.set_host_maintenance(
                sddc_id, host_id, True, key=self.key(sddc_id, "enter_maintenance", host_id)
            )

        def upgrade() -> StartResult:
            key = self.key(sddc_id, "upgrade_host", host_id)
            return hook.start_host_upgrade(sddc_id, host_id, self.target, key=key)

        def leave() -> StartResult:
            return hook.set_host_maintenance(
                sddc_id, host_id, False, key=self.key(sddc_id, "exit_maintenance", host_id)
            )

        return [enter, upgrade, leave]

    def upgrade(self, sddc_id: str) -> int:
        """Every phase of one SDDC in order; returns its host count. Raises on the first failure."""
        hook = self.hook()
        try:
            sddc = hook.get_sddc(sddc_id)
            target = self.target
            steps: list[Callable[[], StartResult]] = [
                lambda: hook.start_precheck(sddc_id, target, key=self.key(sddc_id, "precheck")),
                lambda: hook.start_snapshot(sddc_id, key=self.key(sddc_id, "snapshot"), label="baseline"),
                lambda: hook.start_component_upgrade(
                    sddc_id, "vcenter", target, key=self.key(sddc_id, "upgrade_vcenter")
                ),
                lambda: hook.start_component_upgrade(
                    sddc_id, "nsx", target, key=self.key(sddc_id, "upgrade_nsx")
                ),
            ]
            for step in steps:
                self.wait(hook, self.start(step))
            hosts = sorted(h.id for h in sddc.hosts)
            for host_id in hosts:
                for step in self.host_steps(hook, sddc_id, host_id):
                    self.wait(hook, self.start(step))
            health = hook.get_health(sddc_id)
            if health.status is HealthStatus.UNHEALTHY:
                raise RceError(f"postcheck: {sddc_id} is UNHEALTHY")
            return len(hosts)
        finally:
            hook.close()


def run_baseline(
    *,
    batch_size: int,
    target_version: str,
    source_version: str,
    conn_id: str = CONN_ID,
    sddc_ids: Sequence[str] | None = None,
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float = 3600.0,
    progress: Callable[[str], None] | None = None,
    hook_factory: Callable[[Callable[[float], None]], SddcApiHook] | None = None,
) -> BaselineResult:
    """Upgrade `sddc_ids` (default: every SDDC at `source_version`, by id) in batches of
    `batch_size`, each batch waiting for its slowest member. Never raises for an SDDC that
    fails (it is counted); Ctrl-C stops the member threads and re-raises."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not poll_s > 0:
        raise ValueError("poll_s must be > 0")
    t0 = time.monotonic()
    cpu0 = time.process_time()
    driver = _Driver(
        conn_id=conn_id,
        target_version=target_version,
        poll_s=poll_s,
        deadline=t0 + timeout_s,
        hook_factory=hook_factory,
    )
    if sddc_ids is None:
        lister = driver.hook()
        try:
            sddc_ids = sorted(s.id for s in lister.list_sddcs(version=source_version))
        finally:
            lister.close()
    ids = list(sddc_ids)
    outcomes: dict[str, SddcOutcome] = {}
    batches: list[BatchOutcome] = []
    lock = threading.Lock()

    def member(sddc_id: str, batch: int) -> None:
        started = time.monotonic() - t0
        hosts, error = 0, None
        try:
            hosts = driver.upgrade(sddc_id)
        except _Stopped:
            error = "stopped (timeout or interrupt)"
        except Exception as err:  # one SDDC's failure is a result, not a crash of the baseline
            error = " ".join(str(err).split())[:300]
        outcome = SddcOutcome(
            sddc_id=sddc_id,
            batch=batch,
            ok=error is None,
            started_s=started,
            ended_s=time.monotonic() - t0,
            hosts=hosts,
            error=error,
        )
        with lock:
            outcomes[sddc_id] = outcome

    state: Literal["done", "timeout", "interrupted"] = "done"
    try:
        for index, start in enumerate(range(0, len(ids), batch_size)):
            if time.monotonic() > driver.deadline:
                state = "timeout"
                break
            members = ids[start : start + batch_size]
            b_start = time.monotonic() - t0
            _run_batch(members, index, member)
            batches.append(
                BatchOutcome(index=index, sddc_ids=members, started_s=b_start, ended_s=time.monotonic() - t0)
            )
            if progress is not None:
                done = sum(1 for o in outcomes.values() if o.ok)
                progress(
                    f"baseline batch {index + 1}/{-(-len(ids) // batch_size)} done at "
                    f"{time.monotonic() - t0:.0f} s ({done} of {len(ids)} SDDCs upgraded)"
                )
    except KeyboardInterrupt:
        driver.stop.set()
        raise
    if any(o.error and o.error.startswith("stopped") for o in outcomes.values()):
        state = "timeout"
    ends = [o.ended_s for o in outcomes.values()]
    failed = {o.sddc_id: o.error or "" for o in outcomes.values() if not o.ok}
    failed.update({i: "not started (timeout)" for i in ids if i not in outcomes})
    return BaselineResult(
        batch_size=batch_size,
        poll_s=poll_s,
        sddcs=len(ids),
        upgraded=sum(1 for o in outcomes.values() if o.ok),
        failed=dict(sorted(failed.items())),
        makespan_s=max(ends, default=0.0),
        batches=batches,
        outcomes=sorted(outcomes.values(), key=lambda o: o.sddc_id),
        cpu_s=time.process_time() - cpu0,
        state=state,
    )


def _run_batch(members: Sequence[str], index: int, member: Callable[[str, int], None]) -> None:
    """One thread per member; returns when the slowest is done (joins stay interruptible)."""
    threads = [
        threading.Thread(target=member, args=(sddc_id, index), name=f"baseline-{sddc_id}", daemon=True)
        for sddc_id in members
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
