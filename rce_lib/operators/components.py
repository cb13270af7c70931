"""Management components: vCenter first, then NSX, each to the target release's build."""

from __future__ import annotations

from typing import ClassVar, Literal

from rce_lib.api.models import Sddc, Task, TaskType
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done, Start, Step
from rce_lib.operators.windowed import WindowedPhaseOperator


class ComponentUpgradeOperator(WindowedPhaseOperator):
    """Upgrade one management component (vcenter, then nsx) to the target release's build
    (inside the SDDC's maintenance window when the plan says so: rce_lib.operators.windowed)."""

    component: ClassVar[Literal["vcenter", "nsx"]] = "vcenter"

    derives_sddc = True

    def sddc_after(self, run: PhaseRun, sddc: Sddc, op: str, host_id: str | None, task: Task) -> Sddc | None:
        """The component's upgrade succeeded: it is at the target release's build (the next
        phase reads the real SDDC before acting, and refuses NSX before vCenter)."""
        if op != self.component:
            return None
        want = getattr(run.release.components, self.component)
        components = sddc.components.model_copy(update={self.component: want})
        return sddc.model_copy(update={"components": components})

    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        want = getattr(run.release.components, self.component)
        have = getattr(sddc.components, self.component)
        if have == want:
            return Done(f"{self.component} at {want}", did_nothing=True)
        if self.component == "nsx" and sddc.components.vcenter != run.release.components.vcenter:
            self.fail(
                run,
                Reason.CONFLICT,
                f"nsx cannot go first: vcenter is at {sddc.components.vcenter}, "
                f"not {run.release.components.vcenter}",
                retryable=True,
                for_good=False,
            )
        return Start(
            op=self.component,
            call=lambda hook, key: hook.start_component_upgrade(
                self.sddc_id,
                self.component,
                self.target_version,
                key=key,
            ),
            description=f"upgrade {self.component} of {self.sddc_id} {have} -> {want}",
        )


class VcenterUpgradeOperator(ComponentUpgradeOperator):
    phase = "upgrade_vcenter"
    service = Service.VCENTER
    component = "vcenter"
    task_ops = {TaskType.UPGRADE_VCENTER: "vcenter"}


class NsxUpgradeOperator(ComponentUpgradeOperator):
    phase = "upgrade_nsx"
    service = Service.NSX
    component = "nsx"
    task_ops = {TaskType.UPGRADE_NSX: "nsx"}
