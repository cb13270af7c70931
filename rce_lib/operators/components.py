"""Management components: vCenter first, then NSX, each to the target release's build."""

from __future__ import annotations

from typing import ClassVar, Literal

from rce_lib.api.models import Sddc
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done, Start, Step


class ComponentUpgradeOperator(SddcPhaseOperator):
    """Upgrade one management component (vcenter, then nsx) to the target release's build."""

    component: ClassVar[Literal["vcenter", "nsx"]] = "vcenter"

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


class NsxUpgradeOperator(ComponentUpgradeOperator):
    phase = "upgrade_nsx"
    service = Service.NSX
    component = "nsx"
