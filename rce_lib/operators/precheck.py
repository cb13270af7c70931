"""Precheck: can the SDDC go to the target release?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rce_lib.airflow_support.rendered import as_int
from rce_lib.api.models import Sddc, Task, TaskType
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators import brakes
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.state import at_target
from rce_lib.operators.steps import Done, Start, Step


class PrecheckOperator(SddcPhaseOperator):
    """Ask the API whether the SDDC can go to the target; a blocked precheck fails for good."""

    phase = "precheck"
    service = Service.VCENTER
    task_ops = {TaskType.PRECHECK: "precheck"}
    template_fields: Sequence[str] = (*SddcPhaseOperator.template_fields, "cohort_size")

    def __init__(
        self, *, max_fail_percentage: float = 100.0, cohort_size: int | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.max_fail_percentage = max_fail_percentage
        self.cohort_size = cohort_size

    def begin(self, run: PhaseRun) -> Any:
        """The first phase checks the brakes again: failures may have piled up since admission."""
        brakes.enforce(
            run.ledger,
            self.log,
            rollout=self.rollout,
            wave=self.wave,
            sddc_id=self.sddc_id,
            run_id=run.run_id,
            cohort_size=as_int(self.cohort_size),
            max_fail_percentage=self.max_fail_percentage,
        )
        return super().begin(run)

    derives_sddc = True

    def sddc_after(self, run: PhaseRun, sddc: Sddc, op: str, host_id: str | None, task: Task) -> Sddc | None:
        return sddc  # a precheck changes nothing on the SDDC

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
