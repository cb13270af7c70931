"""The phase operator: read the real SDDC, take one step, defer while downstream works.

Every phase of the per-SDDC task group is a subclass that only decides the next
step (`next_step`). This base owns the loop that makes phases resume-safe:

* it reads the SDDC first, so work that is already true is skipped;
* it re-attaches to a downstream task the ledger knows is still running;
* it starts work with a deterministic Idempotency-Key (rollout, wave, SDDC,
  op, host, target, generation), so a retry or a cleared task replays its key;
* it waits in the triggerer (no worker slot) and continues on the event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, ClassVar, NoReturn

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from rce_lib.airflow_support import kill_switch
from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.api.models import SDDC_ID_RE, VERSION_RE, Sddc, Task, TaskStatus
from rce_lib.api.services import POOL_FOR_SERVICE, Service
from rce_lib.errors import ApiError, InvalidIdentifier, RceError, Reason, ThrottledError
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done, Start, Step, Wait
from rce_lib.reconcile.inflight import PhaseAction, reconcile_before_phase
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger

RETRYABLE_CONFLICTS = {"ALREADY_AT_VERSION", "OPERATION_IN_PROGRESS"}


class PhaseError(AirflowException):
    """A phase failed with a reason code; Airflow may retry it."""

    def __init__(self, reason: Reason | str, message: str) -> None:
        super().__init__(f"[{reason}] {message}")
        self.reason = str(reason)


class PhaseFailedForGood(AirflowFailException):
    """A phase failed and retrying cannot help (the downstream said so)."""

    def __init__(self, reason: Reason | str, message: str) -> None:
        super().__init__(f"[{reason}] {message}")
        self.reason = str(reason)


class SddcPhaseOperator(BaseOperator):
    """Base of every per-SDDC phase. Subclasses set `phase`, `service` and `next_step`."""

    phase: ClassVar[str] = "phase"
    service: ClassVar[Service] = Service.VCENTER
    template_fields: Sequence[str] = ("sddc_id", "target_version")
    ui_color = "#e8f4fd"
    max_steps: ClassVar[int] = 200
    honours_kill_switch: ClassVar[bool] = True

    def __init__(
        self,
        *,
        sddc_id: str,
        target_version: str,
        rollout: str,
        wave: str,
        sddc_api_conn_id: str = "sddc_api",
        poll_min_s: float = 1.0,
        poll_max_s: float = 30.0,
        inline_wait_s: float = 10.0,
        resume_delay_s: float = 15.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", POOL_FOR_SERVICE[self.service])
        super().__init__(**kwargs)
        self.sddc_id = sddc_id
        self.target_version = target_version
        self.rollout = rollout
        self.wave = wave
        self.sddc_api_conn_id = sddc_api_conn_id
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.inline_wait_s = inline_wait_s
        self.resume_delay_s = resume_delay_s

    # -- what subclasses decide ------------------------------------------------
    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        raise NotImplementedError

    def on_task_succeeded(self, run: PhaseRun, op: str, task: Task) -> None:
        """React to a finished downstream task (e.g. keep the snapshot id)."""

    def on_done(self, run: PhaseRun, step: Done) -> Any:
        run.ledger_phase_succeeded(self.phase, step.message, did_nothing=step.did_nothing)
        return step.message

    def on_sddc_gone(self, run: PhaseRun, err: ApiError) -> NoReturn:
        self.fail(run, Reason.SDDC_REMOVED, f"SDDC {self.sddc_id} is gone: {err.message}", for_good=False)

    # -- Airflow entry points --------------------------------------------------
    def execute(self, context: Context) -> Any:
        run = self.open_run(context)
        self.check_kill_switch(run, f"{self.phase} of {self.sddc_id}")
        self.reconcile(run)
        run.ledger_phase_started(self.phase)
        return self.advance(run)

    def reconcile(self, run: PhaseRun) -> None:
        """Reconcile the SDDC before acting, with the fleet sweep's rules (rce_lib.reconcile):
        safe repairs are made, drift that needs a human stops the phase (no rollback)."""
        try:
            decision = reconcile_before_phase(
                run.ledger,
                run.hook,
                rollout=self.rollout,
                wave=self.wave,
                sddc_id=self.sddc_id,
                phase=self.phase,
                run_id=run.run_id,
                target_version=self.target_version,
                target=run.release,
                source=run.source_release(),
            )
        except RceError as err:
            self.fail_from_error(run, err)
        if decision.action is PhaseAction.STOP:
            reason = decision.reason or Reason.DRIFT_NEEDS_HUMAN
            self.fail(run, reason, decision.message, retryable=True, for_good=False)
        if decision.action is PhaseAction.ADOPT:
            self.log.info("reconciled before acting: %s", decision.message)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **_: Any) -> Any:
        run = self.open_run(context)
        event = event or {}
        echo = event.get("echo") or {}
        op, host_id, generation = str(echo.get("op", "")), echo.get("host_id"), int(echo.get("generation", 0))
        if event.get("status") != "terminal":
            reason = str(event.get("reason") or Reason.API_ERROR.value)
            message = f"waiting for {op} failed: {event.get('message')}"
            self.fail(run, reason, message, for_good=False, retryable=bool(event.get("retryable", True)))
        task = Task.model_validate(event["task"])
        self.settle(run, op, host_id, generation, task)
        return self.advance(run, acted=True)

    def resume_after_wait(self, context: Context, event: Any = None) -> Any:
        return self.advance(self.open_run(context))

    # -- the loop ----------------------------------------------------------------
    def open_run(self, context: Context) -> PhaseRun:
        if not isinstance(self.sddc_id, str) or not SDDC_ID_RE.fullmatch(self.sddc_id):
            raise AirflowFailException(str(InvalidIdentifier(f"SDDC id {self.sddc_id!r} is not valid")))
        if not isinstance(self.target_version, str) or not VERSION_RE.fullmatch(self.target_version):
            raise AirflowFailException(
                str(InvalidIdentifier(f"target version {self.target_version!r} is not valid"))
            )
        return PhaseRun.from_context(self, context)

    def advance(self, run: PhaseRun, *, acted: bool = False) -> Any:
        """Step until the phase's goal holds. `acted`: this execution already saw one of its
        downstream tasks finish, so a goal that now holds is its work, not a skip."""
        for _ in range(self.max_steps):
            try:
                sddc = run.hook.get_sddc(self.sddc_id)
            except ApiError as err:
                if err.status == 404:
                    self.on_sddc_gone(run, err)
                self.fail_from_error(run, err)
            step = self.next_step(run, sddc)
            if isinstance(step, Done):
                return self.on_done(run, replace(step, did_nothing=step.did_nothing and not acted))
            if isinstance(step, Wait):
                self.wait(run, step.seconds, step.message)
            assert isinstance(step, Start)
            self.check_kill_switch(run, step.description)
            try:
                task, generation = self.start(run, step)
            except ThrottledError as err:
                self.wait(run, err.retry_after or 5.0, f"{step.op}: downstream pushing back ({err.code})")
            except ApiError as err:
                if err.code in RETRYABLE_CONFLICTS:
                    self.log.info("%s: %s; reading the SDDC again", step.op, err)
                    continue
                if err.code == "CLUSTER_CAPACITY":
                    self.wait(run, 10.0, f"{step.op}: {err.message}")
                self.fail_from_error(run, err)
            task = self.wait_inline(run, task)
            if task.terminal:
                self.settle(run, step.op, step.host_id, generation, task)
                acted = True
                continue
            self.log.info("%s: waiting for downstream task %s (%s)", step.description, task.id, task.status)
            self.defer(
                trigger=DownstreamTaskTrigger(
                    task_id=task.id,
                    sddc_api_conn_id=self.sddc_api_conn_id,
                    trace_id=run.trace_id,
                    poll_min_s=self.poll_min_s,
                    poll_max_s=self.poll_max_s,
                    first_poll_s=self.resume_delay_s,
                    echo={"op": step.op, "host_id": step.host_id, "generation": generation},
                ),
                method_name="execute_complete",
            )
        self.fail(run, Reason.API_ERROR, f"{self.phase} did not converge in {self.max_steps} steps")

    def check_kill_switch(self, run: PhaseRun, what: str) -> None:
        """No new phase and no new downstream task while the kill switch is set (a downstream
        task already running is followed to its end, and reconciliation repairs wait too)."""
        if not self.honours_kill_switch:
            return
        brake = kill_switch.engaged(self.wave)
        if brake is not None:
            message = f"{what}: not started, {brake}. Unset it, then clear this task to resume."
            self.fail(run, Reason.KILL_SWITCH, message, for_good=False)

    def wait_inline(self, run: PhaseRun, task: Task) -> Task:
        """Poll a just-started task for a few seconds before deferring.

        Short downstream tasks (maintenance mode, prechecks) end within seconds;
        waiting for them here costs less than a deferral round trip (a triggerer
        hand-off plus a new worker process), and keeps a resumed task from racing
        the exit of its own previous workload under the LocalExecutor.
        """
        deadline = time.monotonic() + self.inline_wait_s
        delay = 0.25
        while not task.terminal and time.monotonic() + delay < deadline:
            time.sleep(delay)
            task = run.hook.get_task(task.id)
            delay = min(delay * 1.6, 2.0)
        return task

    def start(self, run: PhaseRun, step: Start) -> tuple[Task, int]:
        """Re-attach to the op's running task, or start it under this generation's key."""
        op = run.get_operation(step.op, step.host_id)
        generation = op.generation if op else 0
        if op is not None and op.task_id:
            known = self._reattach(run, step, op.task_id, generation)
            if known is not None:
                return known, generation
            generation = run.bump_generation(step.op, step.host_id, generation)
        key = idempotency_key(
            KeyParts(
                rollout=self.rollout,
                wave=self.wave,
                sddc_id=self.sddc_id,
                phase=step.op,
                host_id=step.host_id,
                target_version=self.target_version,
                generation=generation,
            )
        )
        result = step.call(run.hook, key)
        run.record_operation(step.op, step.host_id, generation, result.task, key, result.outcome)
        self.log.info("%s: task %s %s (key %s)", step.description, result.task.id, result.outcome, key)
        return result.task, generation

    def _reattach(self, run: PhaseRun, step: Start, task_id: str, generation: int) -> Task | None:
        """The op's recorded task if it is still running; None if it ended (a new generation is due)."""
        try:
            task = run.hook.get_task(task_id)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        if task.terminal:
            run.record_operation(step.op, step.host_id, generation, task, None, "observed")
            if task.status is not TaskStatus.SUCCEEDED:
                return task
            return None
        run.record_operation(step.op, step.host_id, generation, task, None, "reattached")
        self.log.info("%s: re-attached to running task %s", step.description, task.id)
        return task

    def settle(self, run: PhaseRun, op: str, host_id: str | None, generation: int, task: Task) -> None:
        """Record a terminal downstream task; raise if it failed."""
        run.record_operation(op, host_id, generation, task, None, "finished")
        if task.status is TaskStatus.SUCCEEDED:
            self.on_task_succeeded(run, op, task)
            return
        run.bump_generation(op, host_id, generation)
        error = task.error
        code = error.code if error else f"TASK_{task.status.value}"
        message = error.message if error else "no error details"
        retryable = error.retryable if error else task.status is TaskStatus.CANCELED
        self.fail(
            run,
            code if code == Reason.PRECHECK_BLOCKED else Reason.DOWNSTREAM_TASK_FAILED,
            f"{op} task {task.id} ended {task.status.value}: {code}: {message}",
            retryable=retryable,
            code=code,
        )

    # -- failing and waiting -----------------------------------------------------
    def wait(self, run: PhaseRun, seconds: float, message: str) -> NoReturn:
        seconds = max(self.resume_delay_s, seconds)
        self.log.info("%s; waiting %.1f s (deferred)", message, seconds)
        run.event("phase_waiting", message, {"seconds": seconds})
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=seconds)), method_name="resume_after_wait")

    def fail_from_error(self, run: PhaseRun, err: RceError) -> NoReturn:
        reason = err.reason
        code = getattr(err, "code", None)
        for_good = isinstance(err, ApiError) and err.status in (409, 422) and not err.retryable
        self.fail(run, reason, str(err), retryable=err.retryable, code=code, for_good=for_good)

    def fail(
        self,
        run: PhaseRun,
        reason: Reason | str,
        message: str,
        *,
        retryable: bool = False,
        code: str | None = None,
        for_good: bool = True,
    ) -> NoReturn:
        """Record the failure in the ledger and raise it to Airflow.

        `for_good` marks a verdict of the downstream (the upgrade itself failed);
        only such failures trigger an automatic rollback. Failures of our own
        infrastructure leave the SDDC as it is, to be resumed by clearing.
        """
        last_try = run.is_last_try
        verdict = for_good and (not retryable or last_try)
        run.ledger_phase_failed(
            self.phase, str(reason), code or str(reason), message, retryable=retryable, verdict=verdict
        )
        self.log.error("%s failed: [%s] %s", self.phase, reason, message)
        if retryable and not last_try:
            raise PhaseError(reason, message)
        raise PhaseFailedForGood(reason, message)
