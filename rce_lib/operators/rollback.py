"""Roll an SDDC back from its snapshot when a phase failed for good.

Runs with trigger rule `one_failed` at the end of the SDDC's task group. It acts
only on a downstream verdict recorded in the ledger (a task FAILED, a blocked
path, an unhealthy postcheck); a failure of our own infrastructure (a killed
worker, an unreachable API) is left alone, to be resumed by clearing the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from rce_lib.api.models import HealthStatus, HostState, Sddc, SddcStatus, TaskType
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.gate import record
from rce_lib.ledger.models import Phase, Status
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done, Start, Step


class RollbackOperator(SddcPhaseOperator):
    phase = "rollback"
    service = Service.VCENTER
    task_ops = {TaskType.ROLLBACK: "rollback"}
    honours_kill_switch = False  # a brake must not leave an SDDC half restored
    template_fields: Sequence[str] = (*SddcPhaseOperator.template_fields, "max_error_rate")

    def __init__(self, *, max_error_rate: float | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_error_rate = max_error_rate

    def begin(self, run: PhaseRun) -> Any:
        progress = run.progress()
        under_way = progress is not None and progress.phase is Phase.ROLLBACK and progress.finished_at is None
        if progress is None or not (run.has_verdict(progress) or under_way):
            raise AirflowSkipException(
                "no downstream verdict recorded: the SDDC is left as it is. "
                "Fix the cause, then clear the failed task to resume."
            )
        # under way: an earlier execution started it, and may have been cut off before recording its task
        return self.advance(run, acted=under_way and self.recover_unrecorded(run))

    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        source = run.source_release()
        if source is None:
            return Done("nothing was changed before the failure", did_nothing=True)
        want = source.components
        restored = (
            sddc.components.vcenter == want.vcenter
            and sddc.components.nsx == want.nsx
            and all(h.version == want.esx and h.state is HostState.CONNECTED for h in sddc.hosts)
        )
        if restored:
            if run.get_operation("rollback", None) is None:
                return Done(f"still at {source.version}: nothing to undo", did_nothing=True)
            if sddc.status is not SddcStatus.READY:
                self.wait(run, 5.0, f"restored to {source.version}, waiting for READY ({sddc.status.value})")
            return Done(f"at {source.version} again")
        snapshot_id = run.snapshot_id()
        if not snapshot_id:
            self.fail(
                run,
                Reason.SNAPSHOT_MISSING,
                f"{self.sddc_id} was changed but has no snapshot to restore; a human must decide",
            )
        if run.get_operation("rollback", None) is None:
            # only now is there something to undo: a no-op rollback leaves the failure as recorded
            run.ledger_phase_started(self.phase)
        return Start(
            op="rollback",
            call=lambda hook, key: hook.start_rollback(self.sddc_id, snapshot_id, key=key),
            description=f"roll {self.sddc_id} back from snapshot {snapshot_id}",
        )

    def on_done(self, run: PhaseRun, step: Done) -> Any:
        if step.did_nothing:
            run.ledger_rolled_back(step.message, restored=False)
            return step.message
        health = run.hook.get_health(self.sddc_id)
        message = f"{step.message}; health {health.status.value}, error rate {health.error_rate:.3f}"
        limit = None if self.max_error_rate in (None, "", "None") else float(str(self.max_error_rate))
        if health.status is HealthStatus.UNHEALTHY or (limit is not None and health.error_rate > limit):
            self.fail(
                run,
                Reason.ROLLBACK_UNHEALTHY,
                f"{message}: restored but not healthy; a human must look",
                for_good=False,
            )
        run.ledger_rolled_back(message, restored=True)
        return message

    def settle(self, run: PhaseRun, op: str, host_id: str | None, generation: int, task: Any) -> None:
        try:
            super().settle(run, op, host_id, generation, task)
        except Exception as err:
            run.ledger_phase_failed(
                self.phase,
                Reason.ROLLBACK_FAILED,
                Reason.ROLLBACK_FAILED,
                str(err),
                retryable=False,
                verdict=False,
            )
            raise


class CanaryRollbackOperator(RollbackOperator):
    """Restore one SDDC of the canary slice after the gate stopped the wave.

    Mapped over the canary slice, with trigger rule `one_failed` on the gate. It
    acts only on a recorded gate decision that stops the wave: a gate that
    crashed (no decision) leaves the SDDCs as they are, to be judged again by
    clearing the gate. SDDCs that never changed, or were already rolled back by
    their own group, are left alone.
    """

    def begin(self, run: PhaseRun) -> Any:
        decision = record.final(run.ledger, self.rollout, self.wave, run.run_id)
        if not record.stops_the_wave(decision):
            raise AirflowSkipException(
                "the gate recorded no decision that stops the wave: nothing rolled back"
            )
        progress = run.progress()
        if progress is None:
            raise AirflowSkipException(f"{self.sddc_id} has no progress record: it was never touched")
        if progress.status is Status.ROLLED_BACK:
            return f"{self.sddc_id} was already rolled back"
        assert decision is not None
        run.event("canary_rollback", f"rolling back: the canary gate decided {decision.decision.value}")
        under_way = progress.phase is Phase.ROLLBACK and progress.finished_at is None
        return self.advance(run, acted=under_way and self.recover_unrecorded(run))
