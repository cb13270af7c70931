"""ESXi hosts: one host per cluster at a time, enter maintenance, upgrade, exit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rce_lib.api.models import Host, HostState, Sddc, Task, TaskType
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.ledger.models import Phase
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done, Start, Step
from rce_lib.operators.windowed import WindowedPhaseOperator


class HostsUpgradeOperator(WindowedPhaseOperator):
    """Upgrade every ESXi host, one host per cluster at a time: enter maintenance,
    upgrade, exit. Hosts are taken in (cluster, id) order; a host already in
    maintenance is finished first, so a resumed phase picks up where it stopped."""

    phase = "upgrade_hosts"
    service = Service.ESX
    task_ops = {TaskType.HOST_MAINTENANCE: "host_enter", TaskType.UPGRADE_HOST: "host_upgrade"}
    derives_sddc = True
    confirm_done = True

    def under_way(self, run: PhaseRun, sddc: Sddc) -> str | None:
        """Also under way when this phase's own work shows on the hosts (a host in maintenance, or
        some hosts at the target build, and the ledger holds host operations of this wave): it
        stopped between two hosts, and the rest must follow now, not a week later."""
        running = super().under_way(run, sddc)
        if running is not None:
            return running
        esx = run.release.components.esx
        in_maintenance = [h.id for h in sddc.hosts if h.state is HostState.MAINTENANCE]
        upgraded = [h.id for h in sddc.hosts if h.version == esx]
        if not in_maintenance and not 0 < len(upgraded) < len(sddc.hosts):
            return None
        ours = any(
            op.phase is Phase.UPGRADE_HOSTS and op.task_id
            for op in run.ledger.operations_of(self.rollout, self.wave, self.sddc_id)
        )
        if not ours:
            return None  # out-of-band changes: reconciliation's business, not a phase under way
        return f"hosts in maintenance {in_maintenance or '-'}, at {esx} {upgraded or '-'}"

    def recovered_op(self, run: PhaseRun, task: Task, mine: Sequence[Task]) -> str | None:
        """A maintenance task does not say whether it entered or left: one started before this
        run upgraded its host entered, one after left. With no upgrade of the host in this run,
        the host's build tells: maintenance is entered only below the target, left only at it."""
        if task.host_id is None:
            return None
        if task.type is not TaskType.HOST_MAINTENANCE:
            return super().recovered_op(run, task, mine)
        host_id = task.host_id
        upgrades = [t.created_at for t in mine if t.type is TaskType.UPGRADE_HOST and t.host_id == host_id]
        if upgrades:
            return "host_enter" if task.created_at < min(upgrades) else "host_exit"
        sddc = run.remembered_sddc()
        host = next((h for h in sddc.hosts if h.id == host_id), None) if sddc else None
        if host is None:
            return None
        return "host_exit" if host.version == run.release.components.esx else "host_enter"

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

    def sddc_after(self, run: PhaseRun, sddc: Sddc, op: str, host_id: str | None, task: Task) -> Sddc | None:
        """A host's enter-maintenance or upgrade task that succeeded left it as the contract
        says (in maintenance; at the target build): that host's next step needs no GET of the
        SDDC. After a host is done (exit) the real SDDC is read again: taking the next host
        out of its cluster is decided on the real state (a host disconnected meanwhile stops
        the phase, and the API does not refuse maintenance for it); that read is also the
        one the phase is declared done on."""
        effect: dict[str, Any]
        if op == "host_enter":
            effect = {"state": HostState.MAINTENANCE}
        elif op == "host_upgrade":
            effect = {"version": run.release.components.esx}
        else:
            return None
        if task.host_id not in (None, host_id) or not any(h.id == host_id for h in sddc.hosts):
            return None
        hosts = [h.model_copy(update=effect) if h.id == host_id else h for h in sddc.hosts]
        return sddc.model_copy(update={"hosts": hosts})

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
