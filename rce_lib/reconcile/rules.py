"""The reconciliation rules: given what the ledger says and what the SDDC really is,
the drift found and the repair for each (pure: no Airflow, no I/O).

The fleet sweep and every phase (in flight) call the same `find_drift`, so there is
one definition of drift. Two things change with who asks:

* **watched**: a phase about to act (`ctx.phase` set) or a sweep of a record whose
  run is still running. The engine moving ahead of its ledger (a task that just
  ended, a host it put into maintenance) is then normal and not drift.
* **in flight** a finding can `block`: the phase stops for a human instead of acting.

What the ledger *expects* of each component follows the phase order: components of
phases the ledger marks done are at the target, the component of the phase in
progress may be at either release, the rest are at the source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from rce_lib.api.models import HostState, Release, Sddc, Task, TaskStatus, TaskType
from rce_lib.errors import Reason
from rce_lib.ledger.models import Operation, Phase, Progress, Status
from rce_lib.reconcile.drift import (
    DriftKind,
    Finding,
    LedgerView,
    RealView,
    RepairKind,
    RuleContext,
    RunState,
)

PHASE_ORDER: tuple[Phase, ...] = (
    Phase.PRECHECK,
    Phase.SNAPSHOT,
    Phase.UPGRADE_VCENTER,
    Phase.UPGRADE_NSX,
    Phase.UPGRADE_HOSTS,
    Phase.POSTCHECK,
    Phase.DONE,
)
TERMINAL_TASK_STATUSES = frozenset(s.value for s in TaskStatus if s.terminal)
SOURCE, TARGET, OTHER = "source", "target", "other"
_CHANGES_SDDC = (Phase.UPGRADE_VCENTER, Phase.UPGRADE_NSX, Phase.UPGRADE_HOSTS)


class PhaseAction(StrEnum):
    PROCEED = "proceed"
    """Nothing found: act as usual."""
    ADOPT = "adopt"
    """Safe repairs were made (or the real state is ahead): act; the phase skips what is done."""
    STOP = "stop"
    """A finding needs a human: do not act."""


@dataclass(frozen=True)
class PhaseDecision:
    """What a phase must do after reconciling its SDDC."""

    action: PhaseAction
    findings: tuple[Finding, ...] = ()
    reason: Reason | None = None
    message: str = ""
    sddc: Sddc | None = field(default=None, compare=False, repr=False)
    """The SDDC as read for this decision, when nothing was changed on the API since
    (no repair started downstream work): the phase acts on this read instead of
    sending the same GET again."""


@dataclass(frozen=True)
class _Make:
    """Builds findings about one record."""

    view: LedgerView
    ctx: RuleContext
    found: list[Finding] = field(default_factory=list)

    def __call__(self, kind: DriftKind, repair: RepairKind, message: str, **kw: object) -> None:
        self.found.append(
            Finding(
                kind=kind,
                repair=repair,
                rollout=self.view.rollout,
                wave=self.view.wave,
                sddc_id=self.view.sddc_id,
                message=f"[{kind.value}] {message}",
                **kw,  # type: ignore[arg-type]
            )
        )


def find_drift(view: LedgerView, real: RealView, ctx: RuleContext) -> list[Finding]:
    """Every drift between one ledger record and its real SDDC, each with its repair."""
    make = _Make(view, ctx)
    if ctx.phase is None:
        _claim_rules(make)
    if real.removed:
        make(
            DriftKind.SDDC_REMOVED,
            RepairKind.NEEDS_HUMAN,
            f"the API no longer knows {view.sddc_id} (404); the ledger still tracks it",
            blocks=True,
            reason=Reason.SDDC_REMOVED,
        )
        return make.found
    if real.violation is not None:
        make(
            DriftKind.API_CONTRACT_VIOLATION,
            RepairKind.NEEDS_HUMAN,
            f"the API's answer for {view.sddc_id} does not fit the contract: {real.violation}",
            blocks=True,
            reason=Reason.CONTRACT_VIOLATION,
        )
        return make.found
    if real.sddc is None:
        return make.found
    watched = ctx.phase is not None or view.run_state is RunState.RUNNING
    if not (ctx.phase is None and watched):
        _task_rules(make, real)
    _host_rules(make, real.sddc, real, watched)
    states = _component_states(real.sddc, view.source, view.target)
    if states is not None and view.progress is not None:
        if not (ctx.phase is None and watched):
            _version_rules(make, view.progress, real.sddc, states)
        _snapshot_rules(make, view.progress, states, real)
    return make.found


def decide(findings: Iterable[Finding]) -> PhaseDecision:
    """In flight: stop if any finding blocks, adopt if any was found, else proceed."""
    found = tuple(findings)
    blocking = [f for f in found if f.blocks]
    if blocking:
        first = blocking[0]
        return PhaseDecision(
            PhaseAction.STOP,
            found,
            first.reason or Reason.DRIFT_NEEDS_HUMAN,
            "; ".join(f.message for f in blocking),
        )
    if found:
        return PhaseDecision(PhaseAction.ADOPT, found, None, "; ".join(f.message for f in found))
    return PhaseDecision(PhaseAction.PROCEED)


def corrupt_row(rollout: str, wave: str, sddc_id: str, detail: str) -> Finding:
    """A ledger row that no longer parses: reported, never repaired by guessing."""
    return Finding(
        kind=DriftKind.LEDGER_ROW_CORRUPT,
        repair=RepairKind.NEEDS_HUMAN,
        rollout=rollout,
        wave=wave,
        sddc_id=sddc_id,
        subject="row",
        message=f"[{DriftKind.LEDGER_ROW_CORRUPT.value}] {detail}",
        blocks=True,
        reason=Reason.CONTRACT_VIOLATION,
    )


# ------------------------------------------------------------------ claims


def _claim_rules(make: _Make) -> None:
    """Stale: the claim's run is not running (ended, gone, or unknown and older than the lease)."""
    view, now = make.view, make.ctx.now
    claim = view.claim
    if claim is None or (claim.rollout, claim.wave) != (view.rollout, view.wave):
        return
    subject = f"claim {claim.run_id}"
    if claim.expired(now):
        make(DriftKind.STALE_CLAIM, RepairKind.RELEASE_CLAIM, "the claim has expired", subject=subject)
        return
    state = view.claim_run_state
    if state is RunState.RUNNING:
        return
    progress = view.progress
    if state is RunState.UNKNOWN:
        lease = make.ctx.lease_s
        quiet = progress is None or (now - progress.updated_at).total_seconds() > lease
        if not ((now - claim.claimed_at).total_seconds() > lease and quiet):
            return
    why = f"run {claim.run_id} is {'over' if state is RunState.ENDED else 'silent past the lease'}"
    if _work_over(progress, view.operations):
        make(DriftKind.STALE_CLAIM, RepairKind.RELEASE_CLAIM, f"{why}; nothing left to do", subject=subject)
        return
    assert progress is not None
    make(
        DriftKind.STALE_CLAIM,
        RepairKind.NEEDS_HUMAN,
        f"{why} with the SDDC left in {progress.phase.value} ({progress.status.value}): "
        "clear the failed task to resume (or roll back), or release the claim by hand",
        subject=subject,
    )


def _work_over(progress: Progress | None, operations: tuple[Operation, ...]) -> bool:
    if progress is None:
        return True  # claimed, never enrolled
    if progress.phase is Phase.DONE or progress.status is Status.ROLLED_BACK:
        return True
    return progress.started_at is None and not any(op.task_id for op in operations)


# ------------------------------------------------------------------ tasks


def _task_rules(make: _Make, real: RealView) -> None:
    for op in make.view.operations:
        if not op.task_id or (op.status or "") in TERMINAL_TASK_STATUSES or op.task_id not in real.tasks:
            continue
        task = real.tasks[op.task_id]
        where = f"{op.phase.value}{'/' + op.host_id if op.host_id else ''}"
        common: dict[str, object] = {
            "subject": f"task {op.task_id}",
            "phase": op.phase,
            "slot": op.host_id,
            "generation": op.generation,
            "task_id": op.task_id,
        }
        if task is None:
            make(
                DriftKind.TASK_UNKNOWN,
                RepairKind.FORGET_TASK,
                f"{where}: the ledger holds task {op.task_id} as {op.status}; the API does not know it",
                **common,
            )
        elif task.terminal:
            kind = (
                DriftKind.TASK_SUCCEEDED_UNRECORDED
                if task.status is TaskStatus.SUCCEEDED
                else DriftKind.TASK_FAILED_UNRECORDED
            )
            make(
                kind,
                RepairKind.REATTACH_TASK,
                f"{where}: the ledger holds task {op.task_id} as {op.status}; it ended {task.status.value}",
                data={"status": task.status.value},
                **common,
            )


# ------------------------------------------------------------------ hosts


def _host_rules(make: _Make, sddc: Sddc, real: RealView, watched: bool) -> None:
    phase = make.ctx.phase
    for host in sorted(sddc.hosts, key=lambda h: h.id):
        if host.state is HostState.DISCONNECTED:
            make(
                DriftKind.HOST_DISCONNECTED,
                RepairKind.NEEDS_HUMAN,
                f"host {host.id} is disconnected: reconnect it, then clear the failed task",
                subject=f"host {host.id}",
                blocks=phase is not Phase.ROLLBACK,
                reason=Reason.HOST_DISCONNECTED,
            )
    in_maintenance = [h for h in sddc.hosts if h.state is HostState.MAINTENANCE]
    if not in_maintenance or _engine_works_hosts(make, watched):
        return
    active: list[Task] = []
    for task_id in sddc.active_task_ids:
        task = real.tasks.get(task_id)
        if task is None:
            return  # an active task we could not read: it may be on any host
        active.append(task)
    if any(t.type is TaskType.ROLLBACK for t in active):
        return  # a rollback brings every host out of maintenance itself
    busy = {t.host_id for t in active if t.host_id}
    for host in sorted(in_maintenance, key=lambda h: h.id):
        if host.id in busy:
            continue
        make(
            DriftKind.HOST_MAINTENANCE_IDLE,
            RepairKind.EXIT_MAINTENANCE,
            f"host {host.id} is in maintenance and no task runs on it",
            subject=f"host {host.id}",
            data={"host_id": host.id},
        )


def _engine_works_hosts(make: _Make, watched: bool) -> bool:
    """The hosts phase (or a rollback) of a watched record puts hosts into maintenance itself."""
    if make.ctx.phase is not None:
        return make.ctx.phase in (Phase.UPGRADE_HOSTS, Phase.ROLLBACK)
    progress = make.view.progress
    return watched and progress is not None and progress.phase in (Phase.UPGRADE_HOSTS, Phase.ROLLBACK)


# ------------------------------------------------------------------ versions


def _component_states(sddc: Sddc, source: Release | None, target: Release | None) -> dict[str, str] | None:
    """Each component ('vcenter', 'nsx', 'host:<id>') at the source build, the target build, or other."""
    if source is None or target is None or source.version == target.version:
        return None

    def state(have: str, src: str, tgt: str) -> str:
        return TARGET if have == tgt else SOURCE if have == src else OTHER

    s, t = source.components, target.components
    states = {
        "vcenter": state(sddc.components.vcenter, s.vcenter, t.vcenter),
        "nsx": state(sddc.components.nsx, s.nsx, t.nsx),
    }
    for host in sddc.hosts:
        states[f"host:{host.id}"] = state(host.version, s.esx, t.esx)
    return states


def _phase_of(component: str) -> Phase:
    if component == "vcenter":
        return Phase.UPGRADE_VCENTER
    return Phase.UPGRADE_NSX if component == "nsx" else Phase.UPGRADE_HOSTS


def _allowed(progress: Progress, component: str) -> set[str]:
    if progress.status is Status.ROLLED_BACK:
        return {SOURCE}
    at, own = PHASE_ORDER.index(progress.phase), PHASE_ORDER.index(_phase_of(component))
    done = progress.status in (Status.SUCCEEDED, Status.SKIPPED)
    if at > own or (at == own and done):
        return {TARGET}
    return {SOURCE, TARGET} if at == own else {SOURCE}


def _version_rules(make: _Make, progress: Progress, sddc: Sddc, states: dict[str, str]) -> None:
    if progress.phase is Phase.ROLLBACK or make.ctx.phase is Phase.ROLLBACK:
        return  # a rollback in progress may leave any mix; the rollback phase judges it
    wrong = {c: s for c, s in states.items() if s not in _allowed(progress, c)}
    if not wrong:
        return
    values = set(states.values())
    where = f"the ledger has it in {progress.phase.value} ({progress.status.value})"
    detail = ", ".join(f"{c}={s}" for c, s in sorted(wrong.items()))
    facts = {"components": states, "ledger_phase": progress.phase.value}
    human = {"blocks": True, "reason": Reason.DRIFT_NEEDS_HUMAN, "data": facts}
    if OTHER in values:
        whole = values == {OTHER}
        make(
            DriftKind.SDDC_CHANGED_OUT_OF_BAND if whole else DriftKind.COMPONENTS_PARTLY_UPGRADED,
            RepairKind.NEEDS_HUMAN,
            f"builds of neither {progress.source_version} nor {progress.target_version} "
            f"(SDDC reports {sddc.version}; {detail}); {where}",
            **human,
        )
    elif values == {TARGET}:
        make(
            DriftKind.SDDC_CHANGED_OUT_OF_BAND,
            RepairKind.ADOPT_STATE,
            f"already at {progress.target_version}; {where}: adopting it as done",
            data={**facts, "adopt_phase": Phase.DONE.value, "adopt_status": Status.SUCCEEDED.value},
        )
    elif values == {SOURCE}:
        make(
            DriftKind.SDDC_CHANGED_OUT_OF_BAND,
            RepairKind.NEEDS_HUMAN,
            f"back at {progress.source_version} out of band; {where}",
            **human,
        )
    elif set(wrong.values()) == {TARGET} and _engine_order(states):
        phase, status = _adopted_pointer(states)
        make(
            DriftKind.COMPONENTS_PARTLY_UPGRADED,
            RepairKind.ADOPT_STATE,
            f"ahead of the ledger ({detail}); {where}: adopting {phase.value} ({status.value})",
            data={**facts, "adopt_phase": phase.value, "adopt_status": status.value},
        )
    else:
        make(
            DriftKind.COMPONENTS_PARTLY_UPGRADED,
            RepairKind.NEEDS_HUMAN,
            f"a mix the engine cannot have left ({detail}); {where}",
            **human,
        )


def _engine_order(states: dict[str, str]) -> bool:
    """The upgrade order holds: nsx only after vcenter, hosts only after nsx."""
    hosts_moved = any(s == TARGET for c, s in states.items() if c.startswith("host:"))
    nsx_ok = states["nsx"] != TARGET or states["vcenter"] == TARGET
    return nsx_ok and (not hosts_moved or states["nsx"] == TARGET)


def _adopted_pointer(states: dict[str, str]) -> tuple[Phase, Status]:
    """The ledger position that explains an engine-ordered partial upgrade."""
    if any(s == TARGET for c, s in states.items() if c.startswith("host:")):
        return Phase.UPGRADE_HOSTS, Status.PENDING
    if states["nsx"] == TARGET:
        return Phase.UPGRADE_NSX, Status.SUCCEEDED
    return Phase.UPGRADE_VCENTER, Status.SUCCEEDED


# ------------------------------------------------------------------ snapshot


def _snapshot_rules(make: _Make, progress: Progress, states: dict[str, str], real: RealView) -> None:
    """Part-way changed without a snapshot: a rollback would have nothing to restore.

    Untouched (all source) needs none yet; fully at the target is adopted as done."""
    if progress.snapshot_id or progress.phase is Phase.DONE or progress.status is Status.ROLLED_BACK:
        return
    if set(states.values()) in ({SOURCE}, {TARGET}):
        return
    snapshot_op = next(
        (op for op in make.view.operations if op.phase is Phase.SNAPSHOT and not op.host_id), None
    )
    task = real.tasks.get(snapshot_op.task_id) if snapshot_op and snapshot_op.task_id else None
    snapshot_id = (task.result or {}).get("snapshot_id") if task is not None else None
    if task is not None and task.status is TaskStatus.SUCCEEDED and isinstance(snapshot_id, str):
        make(
            DriftKind.SNAPSHOT_MISSING,
            RepairKind.ADOPT_SNAPSHOT,
            f"snapshot task {task.id} succeeded but its snapshot was never recorded: adopting {snapshot_id}",
            subject="snapshot",
            task_id=task.id,
            data={"snapshot_id": snapshot_id},
        )
        return
    make(
        DriftKind.SNAPSHOT_MISSING,
        RepairKind.NEEDS_HUMAN,
        "the SDDC was changed and has no snapshot to roll back to: take one or decide by hand",
        subject="snapshot",
        blocks=make.ctx.phase in _CHANGES_SDDC,
        reason=Reason.SNAPSHOT_MISSING,
    )
