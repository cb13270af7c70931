"""Precheck: can the SDDC go to the target release? The SDDC's first phase: it admits the
SDDC first (rce_lib.operators.admission)."""

from __future__ import annotations

from rce_lib.api.models import Sddc, Task, TaskType
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.admission import AdmittingPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.state import at_target
from rce_lib.operators.steps import Done, Start, Step


class PrecheckOperator(AdmittingPhaseOperator):
    """Ask the API whether the SDDC can go to the target; a blocked precheck fails for good."""

    phase = "precheck"
    service = Service.VCENTER
    task_ops = {TaskType.PRECHECK: "precheck"}
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
