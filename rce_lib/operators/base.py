"""The phase operator: read the real SDDC, take one step, defer while downstream works.

Every phase of the per-SDDC task group is a subclass that only decides the next
step (`next_step`). This base owns the loop that makes phases resume-safe:

* it reads the SDDC first, so work that is already true is skipped;
* it re-attaches to a downstream task the ledger knows is still running, and settles
  one that already succeeded (then reads the SDDC again) instead of starting it twice:
  two executions of one phase may run at once after a scheduler crash;
* it starts work with a deterministic Idempotency-Key (rollout, wave, SDDC,
  op, host, target, generation), so a retry or a cleared task replays its key;
* it waits in the triggerer (no worker slot) and continues on the event.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from rce_lib.airflow_support import kill_switch
from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.api.models import SDDC_ID_RE, VERSION_RE, Sddc, Task, TaskStatus, TaskType
from rce_lib.api.services import POOL_FOR_SERVICE, Service
from rce_lib.errors import ApiError, ContractViolation, InvalidIdentifier, RceError, Reason, ThrottledError
from rce_lib.ledger.errors import StaleGeneration
from rce_lib.ledger.models import Phase
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done, Start, Step, Wait
from rce_lib.pacing import wakeup
from rce_lib.reconcile.inflight import PhaseAction, reconcile_before_phase
from rce_lib.telemetry import log_context, scope, tracing
from rce_lib.telemetry.tracing import TaskSpan
from rce_lib.triggers import phase as phase_trigger
from rce_lib.triggers.backoff import poll_delay
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from rce_lib.triggers.service_slot import ServiceSlotTrigger
from rce_lib.triggers.start import StartTrigger

if TYPE_CHECKING:
    from rce_lib.hooks.sddc_api import SddcApiHook

RETRYABLE_CONFLICTS = {"ALREADY_AT_VERSION", "OPERATION_IN_PROGRESS"}
#: a phase that waited for a slot at most this long decides again on the SDDC it had read
SLOT_WAIT_KEEPS_SDDC_S = 600.0


class PhaseError(AirflowException):
    """A phase failed with a reason code; Airflow may retry it."""

    def __init__(self, reason: Reason | str, message: str) -> None:
        super().__init__(f"[{reason}] {message}")
        self.reason = str(reason)
        self.detail = message


class StaleDecision(Exception):
    """The step about to start is already done: its recorded task succeeded after the SDDC the
    decision was made on had been read. The phase reads the SDDC and decides again."""


class PhaseFailedForGood(AirflowFailException):
    """A phase failed and retrying cannot help (the downstream said so)."""

    def __init__(self, reason: Reason | str, message: str) -> None:
        super().__init__(f"[{reason}] {message}")
        self.reason = str(reason)
        self.detail = message


class SddcPhaseOperator(BaseOperator):
    """Base of every per-SDDC phase. Subclasses set `phase`, `service` and `next_step`."""

    phase: ClassVar[str] = "phase"
    service: ClassVar[Service] = Service.VCENTER
    template_fields: Sequence[str] = ("sddc_id", "target_version")
    ui_color = "#e8f4fd"
    max_steps: ClassVar[int] = 200
    #: sddc_after knows the effect of this phase's tasks (the echo then carries the SDDC)
    derives_sddc: ClassVar[bool] = False
    #: the goal, once it holds on a derived SDDC, is confirmed by reading the real one
    confirm_done: ClassVar[bool] = False
    honours_kill_switch: ClassVar[bool] = True
    #: it starts tasks on its service (a slot each): started in the triggerer only under a ceiling
    starts_downstream_work: ClassVar[bool] = True
    #: this phase's downstream task types, and the op that starts each (recover_unrecorded)
    task_ops: ClassVar[Mapping[TaskType, str]] = {}

    def __init__(
        self,
        *,
        sddc_id: str,
        target_version: str,
        rollout: str,
        wave: str,
        sddc_api_conn_id: str = "sddc_api",
        poll_min_s: float = 1.0,
        poll_max_s: float | None = None,
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
        self._took: dict[str, float] = {}
        """Seconds the last task of each op took, in this execution (the downstream's own
        created/updated times): the next task of the op is first polled when it should end."""
        self._rechecked: set[str] = set()
        """Recorded tasks this execution found SUCCEEDED when it was about to start their step
        (start): settled, and the SDDC read again before any of them is started anew."""
        self._in_triggerer = False
        self._before_slot_wait: tuple[Sddc, float] | None = None
        self._ti_fields: dict[str, Any] = {}
        self._hook: SddcApiHook | None = None

    # -- what subclasses decide ------------------------------------------------
    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        raise NotImplementedError

    def on_task_succeeded(self, run: PhaseRun, op: str, task: Task) -> None:
        """React to a finished downstream task (e.g. keep the snapshot id)."""

    def sddc_after(self, run: PhaseRun, sddc: Sddc, op: str, host_id: str | None, task: Task) -> Sddc | None:
        """The SDDC as the contract says op's succeeded `task` left it, for the phase's next
        decision without reading it again; None: read it again. Only within one phase
        instance (this execution, or its resumption after waiting for that very task): a
        start refused on such a derived state reads the SDDC again before it fails, and a
        phase with `confirm_done` is not declared done on one (rce_lib.operators.hosts); the
        postcheck reads everything before an SDDC is done."""
        return None

    def on_done(self, run: PhaseRun, step: Done) -> Any:
        run.ledger_phase_succeeded(self.phase, step.message, did_nothing=step.did_nothing)
        return step.message

    def on_sddc_gone(self, run: PhaseRun, err: ApiError) -> NoReturn:
        self.fail(run, Reason.SDDC_REMOVED, f"SDDC {self.sddc_id} is gone: {err.message}", for_good=False)

    # -- Airflow entry points --------------------------------------------------
    def execute(self, context: Context) -> Any:
        return self.run_from_start(context)

    def run_from_start(self, context: Context, event: Any = None) -> Any:
        """The phase's first execution: `execute` on a worker, or in the triggerer for a task
        started there (rce_lib.triggers.start)."""
        with self.telemetry(context, "execute"):
            return self.begin(self.open_run(context))

    def begin(self, run: PhaseRun) -> Any:
        """The phase's first execution (subclasses check more first, then call this)."""
        self.check_kill_switch(run, f"{self.phase} of {self.sddc_id}")
        self.reconcile(run)
        progress = run.ledger_phase_started(self.phase)
        again = progress.phase_attempts.get(Phase(self.phase), 0) > 1
        return self.advance(run, acted=again and self.recover_unrecorded(run))

    def telemetry(self, context: Context, entry: str) -> AbstractContextManager[TaskSpan]:
        """Log fields bound and the phase span open for one execution (rce_lib.telemetry)."""
        return scope.sddc_scope(
            rollout=self.rollout,
            wave=self.wave,
            sddc_id=self.sddc_id,
            phase=self.phase,
            context=context,
            entry=entry,
        )

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
                sddc=run.take_sddc(),
            )
        except RceError as err:
            self.fail_from_error(run, err)
        run.remember_sddc(decision.sddc)
        if decision.action is PhaseAction.STOP:
            reason = decision.reason or Reason.DRIFT_NEEDS_HUMAN
            self.fail(run, reason, decision.message, retryable=True, for_good=False)
        if decision.action is PhaseAction.ADOPT:
            self.log.info("reconciled before acting: %s", decision.message)

    def recover_unrecorded(self, run: PhaseRun) -> bool:
        """Record the tasks this run started for this phase that the ledger never heard of; True
        if one of them succeeded (this phase's work, not a skip). A recorded task that ended
        unseen is not this method's: the reconciliation before the phase records its status.

        An execution killed after the API accepted its start and before the ledger recorded
        the task leaves no trace of it: the retry replays the key while the task runs, but
        once it has ended the goal simply holds, and the ledger would never name the task.
        The API echoes each request's trace id into the tasks it creates, and the trace is
        this run's and this SDDC's, so this run's tasks are found by one listing. Called only
        when this phase has begun before (a retry or a cleared task); best-effort: a failed
        listing changes nothing."""
        if not self.task_ops:
            return False
        only = next(iter(self.task_ops)) if len(self.task_ops) == 1 else None
        try:
            tasks = run.hook.list_sddc_tasks(self.sddc_id, type=only, limit=200)
        except (ApiError, ContractViolation) as err:
            self.log.warning("could not list the tasks of %s to recover: %s", self.sddc_id, err)
            return False
        mine = [t for t in tasks if t.trace_id == run.trace_id and t.type in self.task_ops]
        succeeded, slots = False, set()
        for task in mine:  # newest first: only the newest task of a slot can be its current one
            op = self.recovered_op(run, task, mine)
            if op is None or (op, task.host_id) in slots:
                continue
            slots.add((op, task.host_id))
            record = run.get_operation(op, task.host_id)
            if record is not None and record.task_id:
                continue
            generation = record.generation if record is not None else 0
            if generation and task.terminal and task.status is not TaskStatus.SUCCEEDED:
                continue  # most likely the failure the slot's generation was bumped for
            key = self.idempotency_key(op, task.host_id, generation)
            try:
                run.record_operation(op, task.host_id, generation, task, key, "recovered")
            except StaleGeneration:
                continue  # another execution of this phase moved the slot on meanwhile: its record stands
            self.log.warning(
                "%s: task %s (%s) was started by an execution cut off before recording it; recorded now",
                op,
                task.id,
                task.status.value,
            )
            if task.status is TaskStatus.SUCCEEDED:
                run.give_slot(op, task.host_id)
                self.on_task_succeeded(run, op, task)
                succeeded = True
        return succeeded

    def recovered_op(self, run: PhaseRun, task: Task, mine: Sequence[Task]) -> str | None:
        """The op that started `task` (one of `mine`, this run's tasks of this phase), or None
        if that cannot be told."""
        return self.task_ops.get(task.type)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **_: Any) -> Any:
        with self.telemetry(context, "execute_complete"):
            run = self.open_run(context)
            event = event or {}
            echo = event.get("echo") or {}
            op, host_id = str(echo.get("op", "")), echo.get("host_id")
            generation = int(echo.get("generation", 0))
            log_context.downstream_task(echo.get("task_id"))
            if event.get("status") != "terminal":
                reason = str(event.get("reason") or Reason.API_ERROR.value)
                message = f"waiting for {op} failed: {event.get('message')}"
                self.fail(run, reason, message, for_good=False, retryable=bool(event.get("retryable", True)))
            task = Task.model_validate(event["task"])
            log_context.downstream_task(task.id)
            run.seed_release(echo.get("release"))
            took = echo.get("took")
            if isinstance(took, dict):
                self._took.update({str(k): float(v) for k, v in took.items() if isinstance(v, int | float)})
            self.settle(run, op, host_id, generation, task)
            before = echo.get("sddc")
            derived = None
            if isinstance(before, dict) and before.get("id") == self.sddc_id:
                derived = self.sddc_after(run, Sddc.model_validate(before), op, host_id, task)
            return self.advance(run, acted=True, derived=derived)

    def resume_after_wait(self, context: Context, event: Any = None) -> Any:
        with self.telemetry(context, "resume_after_wait"):
            return self.advance(self.open_run(context), derived=self._kept_through_slot_wait(event))

    def _kept_through_slot_wait(self, event: Any) -> Sddc | None:
        """The SDDC this phase decided on before it waited for a slot, if this same phase object
        waited (in the triggerer) and not for long: it decides again on it instead of reading it
        again. Safe as any derived state: a start the real SDDC refuses reads it again, a goal
        that holds on it is confirmed on a fresh read (`confirm_done`), and the step's key makes
        a repeated start a replay."""
        kept, self._before_slot_wait = self._before_slot_wait, None
        if kept is None or not isinstance(event, dict) or event.get("status") != "room":
            return None
        sddc, since = kept
        return sddc if time.monotonic() - since <= SLOT_WAIT_KEEPS_SDDC_S else None

    # -- carried on in the triggerer (rce_lib.triggers.phase) ----------------------
    def defer(
        self,
        *,
        trigger: Any,
        method_name: str,
        kwargs: dict[str, Any] | None = None,
        timeout: timedelta | int | float | None = None,
    ) -> NoReturn:
        """Defer; from a worker, the wait and what follows it go on in the triggerer
        (PhaseTrigger) unless RCE_PHASES_IN_TRIGGERER=off. In the triggerer the wait is
        handed back to the PhaseTrigger running this phase."""
        if (
            not self._in_triggerer
            and method_name in phase_trigger.CONTINUABLE
            and kwargs is None
            and timeout is None
            and phase_trigger.enabled()
        ):
            trigger = phase_trigger.PhaseTrigger(
                phase=self.phase_spec(), context=self._ti_fields, wait=trigger.serialize(), method=method_name
            )
            method_name = phase_trigger.RESUME_METHOD
        super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def phase_spec(self) -> dict[str, Any]:
        """This phase's class and rendered arguments: what the triggerer rebuilds it from."""
        kwargs: dict[str, Any] = {"task_id": self.task_id, "retries": self.retries}
        for cls in type(self).__mro__:
            if not (isinstance(cls, type) and issubclass(cls, SddcPhaseOperator)):
                continue
            for name, param in inspect.signature(cls.__init__).parameters.items():
                if param.kind is inspect.Parameter.KEYWORD_ONLY and hasattr(self, name):
                    kwargs.setdefault(name, getattr(self, name))
        return {"classpath": f"{type(self).__module__}.{type(self).__qualname__}", "kwargs": kwargs}

    def in_triggerer(self) -> None:
        """Run by a PhaseTrigger: never wait inline (a thread of the triggerer would sleep),
        and poll a new task on its own schedule (no worker resumption to amortise)."""
        self._in_triggerer = True
        self.inline_wait_s = 0.0
        self.resume_delay_s = 0.0

    def resume_from_triggerer(self, context: Context, event: Any = None, **_: Any) -> Any:
        """Where a phase carried on in the triggerer comes back to a worker: to raise the
        failure it recorded there (Airflow's retries apply), or to take over from the wait
        whose event it was given (the triggerer could not go on), or to run the phase from its
        start (a phase started in the triggerer, rce_lib.triggers.start, that could not)."""
        if not isinstance(event, dict):
            # `airflow dags test` resumes a task the trigger ended with the state's name
            self.log.info("%s of %s ended in the triggerer (%s)", self.phase, self.sddc_id, event)
            return None
        if event.get("status") == "raised":
            reason, message = str(event.get("reason") or Reason.API_ERROR), str(event.get("message"))
            self.log.error("%s failed in the triggerer: [%s] %s", self.phase, reason, message)
            kind = event.get("kind")
            if kind == "skip":
                raise AirflowSkipException(f"[{reason}] {message}" if event.get("reason") else message)
            if kind == "fail":
                raise PhaseFailedForGood(reason, message)
            raise PhaseError(reason, message)
        method = str(event.get("method"))
        if event.get("status") != "handoff" or method not in StartTrigger.continuable:
            raise AirflowFailException(f"[API_ERROR] unexpected event from the triggerer: {event!r}")
        self.log.info("taking over %s of %s from the triggerer", method, self.sddc_id)
        resume = getattr(self, method)
        return resume(context, event=event.get("event"))

    # -- the loop ----------------------------------------------------------------
    def open_run(self, context: Context) -> PhaseRun:
        if not isinstance(self.sddc_id, str) or not SDDC_ID_RE.fullmatch(self.sddc_id):
            raise AirflowFailException(str(InvalidIdentifier(f"SDDC id {self.sddc_id!r} is not valid")))
        if not isinstance(self.target_version, str) or not VERSION_RE.fullmatch(self.target_version):
            raise AirflowFailException(
                str(InvalidIdentifier(f"target version {self.target_version!r} is not valid"))
            )
        ti = context.get("ti")
        self._ti_fields = {
            "run_id": str(context["run_id"]),
            "try_number": int(getattr(ti, "try_number", 1) or 1),
            "map_index": int(getattr(ti, "map_index", None) or -1),
            "dag_id": getattr(ti, "dag_id", None),
            "task_id": getattr(ti, "task_id", self.task_id),
        }
        run = PhaseRun.from_context(self, context, hook=self._hook)
        if self._in_triggerer:  # one session (connection lookup, keep-alive) for every step here
            self._hook = run.hook
        return run

    def advance(self, run: PhaseRun, *, acted: bool = False, derived: Sddc | None = None) -> Any:
        """Step until the phase's goal holds. `acted`: this execution already saw one of its
        downstream tasks finish, so a goal that now holds is its work, not a skip.
        `derived`: the SDDC as this phase's last task left it (sddc_after), not read.

        Any API error on the way (a read in `next_step`, a poll of the task just started, the
        health read of `on_done`) ends the phase as every other failure does: with its reason
        in the ledger, or deferred when the API pushes back with a Retry-After. Never raw."""
        try:
            return self._advance(run, acted=acted, derived=derived)
        except ThrottledError as err:
            self.wait(run, err.retry_after or 5.0, f"{self.phase}: downstream pushing back ({err.code})")
        except RceError as err:
            self.fail_from_error(run, err)

    def _advance(self, run: PhaseRun, *, acted: bool, derived: Sddc | None) -> Any:
        for _ in range(self.max_steps):
            sddc = derived or run.take_sddc() or self.read_sddc(run)
            step = self.next_step(run, sddc)
            if isinstance(step, Done) and derived is not None and self.confirm_done:
                derived = None  # not done on a derived state: read the real one
                continue
            if isinstance(step, Done):
                return self.finish(run, replace(step, did_nothing=step.did_nothing and not acted))
            if isinstance(step, Wait):
                self.wait(run, step.seconds, step.message)
            assert isinstance(step, Start)
            self.check_kill_switch(run, step.description)
            self.take_service_slot(run, step, sddc)
            started = time.monotonic()
            try:
                task, generation = self.start(run, step)
            except StaleDecision as stale:
                self.log.info("%s; reading the SDDC before deciding again", stale)
                derived, acted = None, True
                continue
            except ThrottledError as err:
                run.give_slot(step.op, step.host_id)
                self.wait(run, err.retry_after or 5.0, f"{step.op}: downstream pushing back ({err.code})")
            except ApiError as err:
                run.give_slot(step.op, step.host_id)
                if derived is not None:
                    self.log.info("%s: %s; reading the SDDC before deciding again", step.op, err)
                    derived = None
                    continue
                if err.code in RETRYABLE_CONFLICTS:
                    self.log.info("%s: %s; reading the SDDC again", step.op, err)
                    continue
                if err.code == "CLUSTER_CAPACITY":
                    self.wait(run, 10.0, f"{step.op}: {err.message}")
                self.fail_from_error(run, err)
            derived = None
            expect = self._took.get(step.op)
            typical = None if expect is not None or task.terminal else run.typical_duration(step.op)
            task, next_poll = self.wait_inline(run, task, started, expect=expect, typical=typical)
            if task.terminal:
                self.settle(run, step.op, step.host_id, generation, task)
                acted = True
                derived = self.sddc_after(run, sddc, step.op, step.host_id, task)
                continue
            # `start` just named the task (created or re-attached); in the triggerer a line costs
            # its supervisor a loop of database bookkeeping, so the wait itself is not repeated
            self.log.debug("%s: waiting for downstream task %s (%s)", step.description, task.id, task.status)
            self.defer_on_task(run, step, sddc, task, generation, time.monotonic() - started, next_poll)
        self.fail(run, Reason.API_ERROR, f"{self.phase} did not converge in {self.max_steps} steps")

    def finish(self, run: PhaseRun, step: Done) -> Any:
        """The goal holds, so every task of this phase has ended: no slot of the SDDC's is
        needed any more (one held for a task a cut-off execution never saw end is given back)."""
        if run.give_all_slots():
            self.log.info("gave back the service slots of tasks that ended unseen")
        return self.on_done(run, step)

    def defer_on_task(
        self,
        run: PhaseRun,
        step: Start,
        sddc: Sddc,
        task: Task,
        generation: int,
        age: float,
        next_poll: float,
    ) -> NoReturn:
        """Wait for `task` (`age` seconds old) in the triggerer. The echo brings back what the
        resumed execution needs: the op and key generation, the target release and the SDDC
        this phase acted on (so the resumption derives the task's effect instead of reading
        them again: derives_sddc), and how long this phase's tasks took (first polls)."""
        echo: dict[str, Any] = {
            "op": step.op,
            "host_id": step.host_id,
            "generation": generation,
            "task_id": task.id,
        }
        if run.has_release:
            echo["release"] = run.release.model_dump(mode="json")
        if self.derives_sddc:
            echo["sddc"] = sddc.model_dump(mode="json")
        if self._took:
            echo["took"] = dict(self._took)
        self.defer(
            trigger=DownstreamTaskTrigger(
                task_id=task.id,
                sddc_api_conn_id=self.sddc_api_conn_id,
                trace_id=run.trace_id,
                metrics_ledger_url=run.ledger.url,
                parent_span_id=tracing.current_span_id(run.trace_id),
                log_fields=log_context.current(),
                poll_min_s=self.poll_min_s,
                poll_max_s=self.poll_max_s,
                # the back-off goes on from the task's age, not from the deferral
                started_at=time.time() - age,
                first_poll_s=age + max(self.resume_delay_s, next_poll),
                echo=echo,
            ),
            method_name="execute_complete",
        )

    def slot_rank(self, run: PhaseRun, sddc: Sddc | None) -> int:
        """Who gets a slot given back first (rce_lib.pacing.wakeup): the latest phase, and among
        phases alike the SDDC with the most hosts still to upgrade. Hosts are upgraded one at a
        time, so they are an SDDC's longest work after the bottleneck; the SDDCs that pass it
        last are then the quickest to finish (longest remaining work first)."""
        try:
            phase = list(Phase).index(Phase(self.phase))
        except ValueError:
            phase = 0
        hosts_left = 0
        if sddc is not None:
            esx = run.release.components.esx
            hosts_left = sum(1 for h in sddc.hosts if h.version != esx)
        return wakeup.rank(phase, hosts_left)

    def take_service_slot(self, run: PhaseRun, step: Start, sddc: Sddc | None = None) -> None:
        """Hold a slot on the service for step's task, under its ceiling (the pool's size) and
        its adaptive limit, or wait for one in the triggerer (rce_lib.pacing). A later phase, or
        a bigger SDDC, waiting here for the service goes first (`slot_rank`). `sddc`: what the
        decision was made on, decided on again after the wait (no second read)."""
        service = self.service.value
        rank = self.slot_rank(run, sddc)
        yield_to = wakeup.outranked(service, rank)
        decision = run.take_slot(service, step.op, step.host_id, yield_to_waiters=yield_to)
        if decision is None or decision.granted or run.pacer is None:
            return
        if decision.yielded:
            wakeup.given_back(service)  # there is room: the later phase takes it now, not at its next poll
            why = f"a later phase of another SDDC waits for a slot on {service}"
        elif decision.at_ceiling:
            why = f"our ceiling on {service} (its pool's size) is {decision.ceiling} in flight"
        else:
            why = (
                f"{service} has refused our starts lately and our limit on it is "
                f"{decision.slots:.0f} in flight"
            )
        message = f"{step.description}: not started, {why} ({decision.in_flight} now); waiting for room"
        self.log.info("%s (deferred)", message)
        run.event("phase_waiting", message, {"service": service, "in_flight": decision.in_flight})
        self._before_slot_wait = None if sddc is None else (sddc, time.monotonic())
        self.defer(
            trigger=ServiceSlotTrigger(
                ledger_url=run.ledger.url,
                service=service,
                poll_s=run.pacer.policy.wait_poll_s,
                log_fields=log_context.current(),
                rank=rank,
            ),
            method_name="resume_after_wait",
        )

    def check_kill_switch(self, run: PhaseRun, what: str) -> None:
        """No new phase and no new downstream task while the kill switch is set (a downstream
        task already running is followed to its end, and reconciliation repairs wait too)."""
        if not self.honours_kill_switch:
            return
        brake = kill_switch.engaged(self.wave)
        if brake is not None:
            message = f"{what}: not started, {brake}. Unset it, then clear this task to resume."
            self.fail(run, Reason.KILL_SWITCH, message, for_good=False)

    def read_sddc(self, run: PhaseRun) -> Sddc:
        """GET the SDDC; a 404 means it is gone."""
        try:
            return run.hook.get_sddc(self.sddc_id)
        except ApiError as err:
            if err.status == 404:
                self.on_sddc_gone(run, err)
            self.fail_from_error(run, err)

    def poll_delay(self, age: float, task: Task) -> float:
        """Seconds to the next poll of `task`, `age` seconds old (rce_lib.triggers.backoff)."""
        return poll_delay(
            age, minimum=self.poll_min_s, progress=task.progress_percent, maximum=self.poll_max_s
        )

    def wait_inline(
        self,
        run: PhaseRun,
        task: Task,
        started: float | None = None,
        *,
        expect: float | None = None,
        typical: float | None = None,
    ) -> tuple[Task, float]:
        """Poll a just-started task for a few seconds before deferring; returns the task and
        the delay to its next poll (where the trigger goes on).

        Short downstream tasks (maintenance mode, prechecks) end within seconds;
        waiting for them here costs less than a deferral round trip (a triggerer
        hand-off plus a new worker process), and keeps a resumed task from racing
        the exit of its own previous workload under the LocalExecutor. The polls
        follow the same schedule as the trigger's (`poll_delay`, from the task's age):
        a task that outlives the inline wait has cost a logarithmic number of polls.
        `expect`: how long the same operation's last task took (the hosts phase runs three
        per host); the first poll waits for that, a later one only makes fewer polls.
        `typical`: how long the operation's tasks took lately fleet-wide (rce_lib.ledger.
        durations); less sure, so the first poll waits for half of it and the reported
        progress places the next one.
        """
        started = time.monotonic() if started is None else started
        delay = self.poll_delay(time.monotonic() - started, task)
        if expect and not task.terminal:
            delay = max(delay, 1.1 * expect - (time.monotonic() - started))
        elif typical and not task.terminal:
            delay = max(delay, 0.5 * typical - (time.monotonic() - started))
        while not task.terminal and time.monotonic() + delay < started + self.inline_wait_s:
            time.sleep(delay)
            task = run.hook.get_task(task.id)
            delay = self.poll_delay(time.monotonic() - started, task)
        return task, delay

    def start(self, run: PhaseRun, step: Start) -> tuple[Task, int]:
        """Re-attach to the op's running task, or start it under this generation's key.

        A recorded task that already SUCCEEDED is this step done, most likely after the SDDC
        this decision was made on was read: by another execution of this phase still running
        (a new scheduler re-runs a task instance whose scheduler died while its orphaned
        worker goes on), or by this one before it was killed between the start and the
        result. It is settled and StaleDecision raised, so the phase reads the SDDC and decides
        again; starting the step anew on the stale read would do it twice (and bump the key
        under the other execution's feet). Only when the fresh read still asks for the step
        (its effect was undone since) does it start under a new generation."""
        op = run.get_operation(step.op, step.host_id)
        generation = op.generation if op else 0
        if op is not None and op.task_id:
            known = self._reattach(run, step, op.task_id, generation)
            done = known is not None and known.status is TaskStatus.SUCCEEDED
            if known is not None and done and known.id not in self._rechecked:
                self._rechecked.add(known.id)
                self.settle(run, step.op, step.host_id, generation, known)
                raise StaleDecision(f"{step.description}: its task {known.id} already succeeded")
            if known is not None and not done:
                return known, generation
            generation = run.bump_generation(step.op, step.host_id, generation)
        key = self.idempotency_key(step.op, step.host_id, generation)
        result = step.call(run.hook, key)
        log_context.downstream_task(result.task.id)
        run.record_operation(step.op, step.host_id, generation, result.task, key, result.outcome)
        self.log.info("%s: task %s %s (key %s)", step.description, result.task.id, result.outcome, key)
        return result.task, generation

    def idempotency_key(self, op: str, host_id: str | None, generation: int) -> str:
        return idempotency_key(
            KeyParts(
                rollout=self.rollout,
                wave=self.wave,
                sddc_id=self.sddc_id,
                phase=op,
                host_id=host_id,
                target_version=self.target_version,
                generation=generation,
            )
        )

    def _reattach(self, run: PhaseRun, step: Start, task_id: str, generation: int) -> Task | None:
        """The op's recorded task: re-attached to if it still runs, observed if it failed, as it
        is if it succeeded (start decides); None if the API no longer knows it."""
        try:
            task = run.hook.get_task(task_id)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        log_context.downstream_task(task.id)
        if task.status is TaskStatus.SUCCEEDED:
            return task
        if task.terminal:
            run.record_operation(step.op, step.host_id, generation, task, None, "observed")
            return task
        run.record_operation(step.op, step.host_id, generation, task, None, "reattached")
        self.log.info("%s: re-attached to running task %s", step.description, task.id)
        return task

    def settle(self, run: PhaseRun, op: str, host_id: str | None, generation: int, task: Task) -> None:
        """Record a terminal downstream task (its service slot is free); raise if it failed."""
        log_context.downstream_task(task.id)
        run.give_slot(op, host_id)
        run.record_operation(op, host_id, generation, task, None, "finished")
        if task.status is TaskStatus.SUCCEEDED:
            took = max(0.0, (task.updated_at - task.created_at).total_seconds())
            if op not in self._took:  # one sample per op and execution is enough of a hint
                run.record_duration(op, took)
            self._took[op] = took
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
