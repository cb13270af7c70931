"""ESXi hosts: one host per cluster at a time, enter maintenance, upgrade, exit."""

from __future__ import annotations

from rce_lib.api.models import Host, HostState, Sddc
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done, Start, Step


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
