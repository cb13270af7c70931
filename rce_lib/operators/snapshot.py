"""Snapshot: a restore point for vCenter and NSX before anything changes."""

from __future__ import annotations

from rce_lib.api.models import Sddc, Task, TaskType
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.state import at_target
from rce_lib.operators.steps import Done, Start, Step


class SnapshotOperator(SddcPhaseOperator):
    """Back up vCenter and NSX before anything changes, so that rollback has a restore point."""

    phase = "snapshot"
    service = Service.VCENTER
    task_ops = {TaskType.SNAPSHOT: "snapshot"}

    derives_sddc = True

    def sddc_after(self, run: PhaseRun, sddc: Sddc, op: str, host_id: str | None, task: Task) -> Sddc | None:
        return sddc  # a snapshot changes nothing on the SDDC

    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        progress = run.progress()
        if progress is not None and progress.snapshot_id:
            return Done(f"snapshot {progress.snapshot_id} already taken", did_nothing=True)
        if at_target(run, sddc):
            return Done("already at target: nothing to protect", did_nothing=True)
        return Start(
            op="snapshot",
            call=lambda hook, key: hook.start_snapshot(
                self.sddc_id, key=key, label=f"rce {self.rollout}/{self.wave} before {self.target_version}"
            ),
            description=f"snapshot {self.sddc_id}",
        )

    def on_task_succeeded(self, run: PhaseRun, op: str, task: Task) -> None:
        snapshot_id = (task.result or {}).get("snapshot_id")
        if not isinstance(snapshot_id, str) or not snapshot_id:
            self.fail(
                run, Reason.CONTRACT_VIOLATION, f"snapshot task {task.id} succeeded without a snapshot_id"
            )
        run.set_snapshot(snapshot_id)
