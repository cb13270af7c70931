"""The upgrade phases of one SDDC, each deciding its next step from the real SDDC.

precheck -> snapshot -> upgrade_vcenter -> upgrade_nsx -> upgrade_hosts -> postcheck.
Every phase first asks "is my goal already true?" and returns Done if so, which
is what lets a cleared task continue from where the SDDC really is.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import Context

from rce_lib.api.models import Host, HostState, Sddc, SddcStatus, Task, TaskStatus
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun, in_process_test_run
from rce_lib.operators.steps import Done, Start, Step


def at_target(run: PhaseRun, sddc: Sddc) -> bool:
    """Every component and host carries the target release's builds."""
    want = run.release.components
    return (
        sddc.components.vcenter == want.vcenter
        and sddc.components.nsx == want.nsx
        and all(h.version == want.esx for h in sddc.hosts)
    )


class PrecheckOperator(SddcPhaseOperator):
    """Ask the API whether the SDDC can go to the target; a blocked precheck fails for good.

    Also admits the SDDC into the wave's in-flight budget (`max_parallel`): the
    SDDC waits here, deferred, until fewer than `max_parallel` SDDCs of the run
    are between precheck and their end.
    """

    phase = "precheck"
    service = Service.VCENTER
    template_fields = (*SddcPhaseOperator.template_fields, "max_parallel")

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
                trigger=TimeDeltaTrigger(timedelta(seconds=self.admission_poll_s)), method_name="execute"
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


class SnapshotOperator(SddcPhaseOperator):
    """Back up vCenter and NSX before anything changes, so that rollback has a restore point."""

    phase = "snapshot"
    service = Service.VCENTER

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
            self.fail(run, Reason.CONTRACT_VIOLATION, f"snapshot task {task.id} succeeded without a snapshot_id")
        run.set_snapshot(snapshot_id, source_version=run.source_version_hint)


class ComponentUpgradeOperator(SddcPhaseOperator):
    """Upgrade one management component (vcenter, then nsx) to the target release's build."""

    component: ClassVar[str] = "vcenter"

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
                self.sddc_id, self.component, self.target_version, key=key  # type: ignore[arg-type]
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


class HostsUpgradeOperator(SddcPhaseOperator):
    """Upgrade every ESXi host, one host per cluster at a time: enter maintenance,
    upgrade, exit. Hosts are taken in (cluster, id) order; a host already in
    maintenance is finished first, so a resumed phase picks up where it stopped."""

    phase = "upgrade_hosts"
    service = Service.ESX

    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        esx = run.release.components.esx
        hosts = sorted(sddc.hosts, key=lambda h: (h.cluster_id, h.id))
        disconnected = [h.id for h in hosts if h.state is HostState.DISCONNECTED]
        if disconnected:
            self.fail(
                run,
                Reason.HOST_DISCONNECTED,
                f"hosts disconnected: {', '.join(disconnected)}",
                retryable=True,
                for_good=False,
            )
        in_maintenance = [h for h in hosts if h.state is HostState.MAINTENANCE]
        for host in in_maintenance:
            return self._finish_host(host, esx)
        for host in hosts:
            if host.version != esx:
                return self._set_maintenance(host, True)
        return Done(f"all {len(hosts)} hosts at {esx}", did_nothing=False)

    def _finish_host(self, host: Host, esx: str) -> Step:
        if host.version != esx:
            return Start(
                op="host_upgrade",
                host_id=host.id,
                call=lambda hook, key: hook.start_host_upgrade(
                    self.sddc_id, host.id, self.target_version, key=key
                ),
                description=f"upgrade host {host.id} {host.version} -> {esx}",
            )
        return self._set_maintenance(host, False)

    def _set_maintenance(self, host: Host, enabled: bool) -> Step:
        verb = "enter" if enabled else "exit"
        return Start(
            op=f"host_{verb}",
            host_id=host.id,
            call=lambda hook, key: hook.set_host_maintenance(self.sddc_id, host.id, enabled, key=key),
            description=f"{verb} maintenance on host {host.id}",
        )


class PostcheckOperator(SddcPhaseOperator):
    """Verify the SDDC is at the target, READY, every host connected, and healthy."""

    phase = "postcheck"
    service = Service.VCENTER
    template_fields = (*SddcPhaseOperator.template_fields, "max_error_rate", "max_p95_latency_ms")

    def __init__(
        self,
        *,
        max_error_rate: float | str = 0.05,
        max_p95_latency_ms: float | str = 1000.0,
        health_checks: int = 3,
        health_interval_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_error_rate = max_error_rate
        self.max_p95_latency_ms = max_p95_latency_ms
        self.health_checks = health_checks
        self.health_interval_s = health_interval_s

    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        problems = self.problems(run, sddc)
        if not problems:
            return Done(f"{self.sddc_id} at {self.target_version}, READY and healthy")
        checks = run.count_event("postcheck_unhealthy") + 1
        run.event("postcheck_unhealthy", "; ".join(problems), {"check": checks})
        if checks < self.health_checks:
            self.wait(run, self.health_interval_s, f"postcheck {checks}/{self.health_checks}: {problems[0]}")
        self.fail(run, Reason.POSTCHECK_UNHEALTHY, "; ".join(problems))

    def problems(self, run: PhaseRun, sddc: Sddc) -> list[str]:
        problems: list[str] = []
        if not at_target(run, sddc) or sddc.version != self.target_version:
            problems.append(f"version is {sddc.version}, components not all at {self.target_version}")
        if sddc.status is not SddcStatus.READY:
            problems.append(f"status is {sddc.status.value}, not READY")
        down = [h.id for h in sddc.hosts if h.state is not HostState.CONNECTED]
        if down:
            problems.append(f"hosts not connected: {', '.join(down)}")
        health = run.hook.get_health(self.sddc_id)
        if health.error_rate > float(self.max_error_rate):
            problems.append(f"error rate {health.error_rate:.3f} > {float(self.max_error_rate):.3f}")
        if health.p95_latency_ms > float(self.max_p95_latency_ms):
            problems.append(f"p95 latency {health.p95_latency_ms:.0f} ms > {float(self.max_p95_latency_ms):.0f} ms")
        return problems

    def on_done(self, run: PhaseRun, step: Done) -> Any:
        run.ledger_sddc_finished(step.message)
        return step.message


__all__ = [
    "HostsUpgradeOperator",
    "NsxUpgradeOperator",
    "PostcheckOperator",
    "PrecheckOperator",
    "SnapshotOperator",
    "TaskStatus",
    "VcenterUpgradeOperator",
]
