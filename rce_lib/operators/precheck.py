"""Precheck: can the SDDC go to the target release? Also the wave's in-flight admission."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from rce_lib.api.models import Sddc
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun, in_process_test_run
from rce_lib.operators.state import at_target
from rce_lib.operators.steps import Done, Start, Step
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger


class PrecheckOperator(SddcPhaseOperator):
    """Ask the API whether the SDDC can go to the target; a blocked precheck fails for good.

    Also admits the SDDC into the wave's in-flight budget (`max_parallel`): the
    SDDC waits here, deferred, until fewer than `max_parallel` SDDCs of the run
    are between precheck and their end.
    """

    phase = "precheck"
    service = Service.VCENTER
    template_fields: Sequence[str] = (*SddcPhaseOperator.template_fields, "max_parallel")

    def __init__(
        self, *, max_parallel: int | str | None = None, admission_poll_s: float = 5.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.max_parallel = max_parallel
        self.admission_poll_s = admission_poll_s

    def execute(self, context: Context, event: Any = None) -> Any:
        run = self.open_run(context)
        limit = int(self.max_parallel) if self.max_parallel not in (None, "", "None") else None
        if limit is not None and not in_process_test_run() and not run.admit(limit):
            self.log.info("%d SDDCs of this run are in flight (max_parallel): waiting for a slot", limit)
            self.defer(
                trigger=LedgerSlotTrigger(
                    ledger_url=run.ledger.url,
                    rollout=self.rollout,
                    wave=self.wave,
                    run_id=run.run_id,
                    limit=limit,
                    poll_s=self.admission_poll_s,
                    first_poll_s=self.resume_delay_s,
                ),
                method_name="execute",
            )
        run.ledger_phase_started(self.phase)
        return self.advance(run)

    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        if at_target(run, sddc):
            return Done(f"already at {self.target_version}", did_nothing=True)
        if run.operation_succeeded("precheck"):
            return Done("precheck passed earlier in this rollout", did_nothing=True)
        if sddc.version not in run.release.upgrade_from and sddc.version != self.target_version:
            self.fail(
                run,
                Reason.UPGRADE_PATH_NOT_SUPPORTED,
                f"{sddc.version} cannot upgrade straight to {self.target_version} "
                f"(allowed from {', '.join(run.release.upgrade_from) or 'nothing'})",
            )
        return Start(
            op="precheck",
            call=lambda hook, key: hook.start_precheck(self.sddc_id, self.target_version, key=key),
            description=f"precheck {self.sddc_id} for {self.target_version}",
        )
