"""Everything one execution of a phase needs: the API hook, the ledger, who we are.

It also maps operation names onto ledger slots, so the operators speak in
operations (vcenter, host_enter...) and the ledger in (phase, host) slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.api.models import Release, Sddc, Task, TaskStatus
from rce_lib.api.tracing import trace_id_for
from rce_lib.ledger import Ledger
from rce_lib.ledger.durations import TaskDurations
from rce_lib.ledger.models import EventKind, Operation, Phase, Progress, Status
from rce_lib.ledger.release_cache import ReleaseCache
from rce_lib.metrics.downstream import ledger_recorder
from rce_lib.pacing.feedback import fan_out, pacing_observer
from rce_lib.pacing.policy import load_policy
from rce_lib.pacing.store import Pacer, SlotDecision
from rce_lib.telemetry import tracing

if TYPE_CHECKING:
    from airflow.sdk import Context

    from rce_lib.hooks.sddc_api import SddcApiHook
    from rce_lib.operators.base import SddcPhaseOperator

OP_PHASE: dict[str, Phase] = {
    "precheck": Phase.PRECHECK,
    "snapshot": Phase.SNAPSHOT,
    "vcenter": Phase.UPGRADE_VCENTER,
    "nsx": Phase.UPGRADE_NSX,
    "host_enter": Phase.UPGRADE_HOSTS,
    "host_upgrade": Phase.UPGRADE_HOSTS,
    "host_exit": Phase.UPGRADE_HOSTS,
    "rollback": Phase.ROLLBACK,
}

OUTCOME_EVENT = {
    "created": EventKind.TASK_STARTED,
    "replayed": EventKind.TASK_REPLAYED,
    "adopted": EventKind.TASK_ADOPTED,
    "recovered": EventKind.TASK_RECOVERED,
}


def _slot(op: str, host_id: str | None) -> tuple[Phase, str]:
    """Ledger slot of an operation: host operations share the hosts phase, one slot per host and action."""
    phase = OP_PHASE[op]
    if host_id is None:
        return phase, ""
    return phase, f"{host_id}/{op.removeprefix('host_')}"


@dataclass
class PhaseRun:
    """One execution (or resumption) of one phase for one SDDC."""

    operator: SddcPhaseOperator
    hook: SddcApiHook
    ledger: Ledger
    run_id: str
    try_number: int
    is_last_try: bool
    trace_id: str
    pacer: Pacer | None = None
    _release: Release | None = field(default=None, repr=False)
    _sddc: Sddc | None = field(default=None, repr=False)

    @classmethod
    def from_context(
        cls, operator: SddcPhaseOperator, context: Context, *, hook: SddcApiHook | None = None
    ) -> PhaseRun:
        """`hook`: the one an earlier step of the same phase used (in the triggerer, where one
        phase object takes many steps), kept with its session and connection."""
        from rce_lib.hooks.sddc_api import SddcApiHook

        run_id = str(context["run_id"])
        ti = context["ti"]
        try_number = int(getattr(ti, "try_number", 1) or 1)
        retries = int(operator.retries or 0)
        trace_id = trace_id_for(operator.rollout, operator.wave, operator.sddc_id, run_id)
        ledger = get_ledger()
        policy = load_policy()
        # slots always bound our work by the services' ceilings; the limit adapts only if pacing is on
        pacer = Pacer(ledger, policy)
        if hook is None or hook.trace_id != trace_id:
            hook = SddcApiHook(
                sddc_api_conn_id=operator.sddc_api_conn_id,
                trace_id=trace_id,
                on_request=fan_out(
                    ledger_recorder(ledger.url).observe, pacing_observer(pacer) if policy.enabled else None
                ),
            )
        return cls(
            operator=operator,
            hook=hook,
            ledger=ledger,
            run_id=run_id,
            try_number=try_number,
            is_last_try=try_number > retries,
            trace_id=trace_id,
            pacer=pacer,
        )

    # -- identity -----------------------------------------------------------------
    @property
    def _ids(self) -> tuple[str, str, str]:
        op = self.operator
        return op.rollout, op.wave, op.sddc_id

    @property
    def has_release(self) -> bool:
        return self._release is not None

    @property
    def release(self) -> Release:
        if self._release is None:
            self._release = self.read_release(self.operator.target_version)
        return self._release

    def read_release(self, version: str) -> Release:
        """A release from the shared cache when fresh (rce_lib.ledger.release_cache), else the API."""
        cache = ReleaseCache(self.ledger)
        body = cache.get(version)
        if body is not None:
            try:
                release = Release.model_validate(body)
            except ValueError:
                release = None
            if release is not None and release.version == version:
                return release
        release = self.hook.get_release(version)
        cache.put(version, release.model_dump(mode="json"))
        return release

    def seed_release(self, data: Any) -> None:
        """Take the target release this phase read in an earlier execution (carried in the
        trigger's echo) instead of reading it again; ignored unless it is the target's."""
        if self._release is not None or not isinstance(data, dict):
            return
        try:
            release = Release.model_validate(data)
        except ValueError:
            return
        if release.version == self.operator.target_version:
            self._release = release

    def remember_sddc(self, sddc: Sddc | None) -> None:
        """Keep an SDDC just read (nothing written since) for the phase's next decision."""
        self._sddc = sddc

    def remembered_sddc(self) -> Sddc | None:
        """The SDDC remembered by `remember_sddc`, left for the next decision."""
        return self._sddc

    def take_sddc(self) -> Sddc | None:
        """The SDDC remembered by `remember_sddc`, once: any later decision reads again."""
        sddc, self._sddc = self._sddc, None
        return sddc

    def progress(self) -> Progress | None:
        return self.ledger.get(*self._ids)

    @property
    def source_version_hint(self) -> str | None:
        progress = self.progress()
        return progress.source_version if progress else None

    def source_release(self) -> Release | None:
        version = self.source_version_hint
        return self.read_release(version) if version else None

    def snapshot_id(self) -> str | None:
        progress = self.progress()
        return progress.snapshot_id if progress else None

    # -- operations ------------------------------------------------------------------
    def get_operation(self, op: str, host_id: str | None) -> Operation | None:
        phase, slot = _slot(op, host_id)
        return self.ledger.get_operation(*self._ids, phase, host_id=slot)

    def operation_succeeded(self, op: str, host_id: str | None = None) -> bool:
        record = self.get_operation(op, host_id)
        return record is not None and record.status == TaskStatus.SUCCEEDED.value

    def record_operation(
        self, op: str, host_id: str | None, generation: int, task: Task, key: str | None, outcome: str
    ) -> None:
        phase, slot = _slot(op, host_id)
        self.ledger.record_operation_task(
            *self._ids,
            phase,
            host_id=slot,
            generation=generation,
            task_id=task.id,
            key=key,
            status=task.status.value,
            run_id=self.run_id,
            kind=OUTCOME_EVENT.get(outcome, f"task_{outcome}"),
            message=f"{op} task {task.id} {task.status.value}",
        )

    def bump_generation(self, op: str, host_id: str | None, expected: int) -> int:
        phase, slot = _slot(op, host_id)
        return self.ledger.bump_generation(
            *self._ids,
            phase,
            host_id=slot,
            expected_generation=expected,
            run_id=self.run_id,
            message=f"{op}: previous task ended; next start uses a new key",
        )

    # -- progress ----------------------------------------------------------------------
    def ledger_phase_started(self, phase: str) -> Progress:
        return self.ledger.phase_started(
            *self._ids, self.run_id, Phase(phase), target_version=self.operator.target_version
        )

    def ledger_phase_succeeded(self, phase: str, message: str, *, did_nothing: bool) -> None:
        if did_nothing:
            self.ledger.phase_skipped(*self._ids, self.run_id, Phase(phase), message=message)
        else:
            self.ledger.phase_succeeded(*self._ids, self.run_id, Phase(phase), message=message)

    def ledger_phase_failed(
        self, phase: str, reason: str, code: str, message: str, *, retryable: bool, verdict: bool
    ) -> None:
        self.ledger.phase_failed(
            *self._ids, self.run_id, Phase(phase), code=code, message=message, retryable=retryable
        )
        if retryable and self.is_last_try:  # final all the same: the SDDC no longer holds an in-flight slot
            self.ledger.upsert_progress(*self._ids, self.run_id, finished_at=datetime.now(UTC))
        self.event(
            "phase_verdict" if verdict else "phase_error",
            message,
            {"reason": reason, "code": code, "retryable": retryable, "verdict": verdict},
        )
        if phase == Phase.ROLLBACK.value and not (retryable and not self.is_last_try):
            self.emit_sddc_span("rollback_failed", failed=True, reason=code)

    def ledger_sddc_finished(self, message: str) -> None:
        """Postcheck passed: the SDDC is done (the ledger moves it to `done`) and its claim is freed."""
        rollout, wave, sddc_id = self._ids
        self.ledger.phase_succeeded(rollout, wave, sddc_id, self.run_id, Phase.POSTCHECK, message=message)
        self.ledger.release(sddc_id, rollout, wave, self.run_id)
        self.emit_sddc_span("succeeded")

    def ledger_rolled_back(self, message: str, *, restored: bool) -> None:
        """The failed SDDC is at its source release again (or was never changed); free its claim."""
        rollout, wave, sddc_id = self._ids
        if restored:
            self.ledger.phase_succeeded(rollout, wave, sddc_id, self.run_id, Phase.ROLLBACK, message=message)
        else:
            self.event("rollback_not_needed", message)
        self.ledger.release(sddc_id, rollout, wave, self.run_id)
        self.emit_sddc_span("rolled_back" if restored else "rollback_not_needed", failed=True)

    def emit_sddc_span(self, outcome: str, *, failed: bool = False, reason: str | None = None) -> None:
        """The SDDC span, once its upgrade ended (postcheck passed, or the rollback ended): from
        the ledger's `started_at` to now, the root of the (run, SDDC) trace, linked to the wave.
        An SDDC rolled back failed its upgrade: status ERROR, with the failure's code."""
        if not tracing.enabled():
            return
        rollout, wave, sddc_id = self._ids
        progress = self.progress()
        if failed and reason is None:
            reason = progress.last_error.code if progress and progress.last_error else outcome
        tracing.emit_span(
            "rce.sddc",
            tracing.sddc_ref(rollout, wave, sddc_id, self.run_id),
            start=progress.started_at if progress else None,
            end=datetime.now(UTC),
            attributes={
                "rce.rollout": rollout,
                "rce.wave": wave,
                "rce.sddc_id": sddc_id,
                "rce.run_id": self.run_id,
                "rce.outcome": outcome,
                "rce.reason": reason,
                "rce.target_version": self.operator.target_version,
                "rce.source_version": progress.source_version if progress else None,
                "rce.attempts": progress.attempts if progress else None,
            },
            links=[tracing.wave_ref(rollout, wave, self.run_id)],
            error=reason if failed else None,
        )

    def admit(self, limit: int) -> bool:
        return self.ledger.admit(*self._ids, self.run_id, limit)

    def set_snapshot(self, snapshot_id: str) -> None:
        self.ledger.set_snapshot(*self._ids, self.run_id, snapshot_id)

    def has_verdict(self, progress: Progress) -> bool:
        """True if the SDDC's latest phase attempt ended in a downstream verdict.

        A later attempt that started and then died (a killed worker) leaves a
        `phase_started` event after the verdict: then there is nothing to roll
        back automatically, the SDDC is resumed by clearing instead.
        """
        if progress.status is not Status.FAILED:
            return False
        rollout, wave, sddc_id = self._ids
        kinds = [EventKind.PHASE_STARTED.value, "phase_verdict", "phase_error"]
        history = [
            e
            for e in self.ledger.events(
                rollout=rollout, wave=wave, sddc_id=sddc_id, kinds=kinds, limit=10_000
            )
            if e.phase is not Phase.ROLLBACK
        ]
        return bool(history) and history[-1].kind == "phase_verdict"

    # -- events ------------------------------------------------------------------------
    # -- task duration history (rce_lib.ledger.durations) ------------------------------
    def typical_duration(self, op: str) -> float | None:
        """How long op's tasks took lately, fleet-wide (None: too few samples, or unreadable)."""
        try:
            return TaskDurations(self.ledger).typical(op)
        except Exception:  # a hint: never fail a phase over it
            return None

    def record_duration(self, op: str, seconds: float) -> None:
        try:
            TaskDurations(self.ledger).record(op, seconds)
        except Exception as err:  # a hint: never fail a phase over it
            self.operator.log.warning("could not record how long %s took: %s", op, err)

    # -- pacing (rce_lib.pacing) ---------------------------------------------------
    def _holder(self, op: str, host_id: str | None) -> str:
        return "/".join((*self._ids, op, host_id or "-"))

    def take_slot(
        self, service: str, op: str, host_id: str | None, *, yield_to_waiters: bool = False
    ) -> SlotDecision | None:
        """A slot on `service` for op's downstream task (None: no pacer)."""
        if self.pacer is None:
            return None
        holder = self._holder(op, host_id)
        return self.pacer.acquire(service, holder, self.run_id, yield_to_waiters=yield_to_waiters)

    def give_slot(self, op: str, host_id: str | None) -> None:
        """op's task ended or was never started: its slot is free."""
        if self.pacer is not None:
            self.pacer.release(self._holder(op, host_id))

    def give_all_slots(self) -> int:
        """The phase is done, so every task of this SDDC has ended: give back any slot still
        held for one. A phase cut off while its task ran (a killed triggerer or worker) and then
        found the goal true never saw that task end; its slot would count against the service
        until the run's end."""
        if self.pacer is None:
            return 0
        return self.pacer.release_prefix("/".join(self._ids) + "/")

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        rollout, wave, sddc_id = self._ids
        self.ledger.append_event(
            rollout,
            wave,
            kind,
            sddc_id=sddc_id,
            run_id=self.run_id,
            phase=Phase(self.operator.phase),
            message=message,
            data=data,
        )

    def count_event(self, kind: str) -> int:
        rollout, wave, sddc_id = self._ids
        return len(
            self.ledger.events(rollout=rollout, wave=wave, sddc_id=sddc_id, run_id=self.run_id, kinds=[kind])
        )


def in_process_test_run() -> bool:
    """True under `airflow dags test` / `dag.test()`: tasks run one at a time in this
    process, so no SDDC can wait for another (an in-flight limit would deadlock) and
    the limit holds trivially: only one task talks to the fleet at any moment."""
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms
    except ImportError:  # pragma: no cover - other Airflow versions
        return False
    return isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), InProcessSupervisorComms)
