"""The mutating operations of the contract, with every refusal the contract names.

Each `start_*` either returns a new task or raises ApiProblem. Work that is already
running or already done, asked for under a new key, is also counted as a duplicate
start (the counter the benchmarks use to prove the engine never starts work twice).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rce_lib.sim.config import ReleaseSpec
from rce_lib.sim.limits import retry_after_seconds
from rce_lib.sim.model import Host, SddcRec, TaskRec
from rce_lib.sim.problems import ApiProblem
from rce_lib.sim.state import FleetState, service_of


@dataclass
class Call:
    """Who asked: used for task trace ids, keys and counter details."""

    method: str
    path: str
    now: float
    key: str | None
    trace_id: str | None
    span_id: str | None = None


class Ops:
    def __init__(self, state: FleetState) -> None:
        self.state = state

    # ------------------------------------------------------------ helpers

    def _release(self, version: str) -> ReleaseSpec:
        rel = self.state.releases.get(version)
        if rel is None:
            raise ApiProblem(422, "UNKNOWN_RELEASE", f"release {version} does not exist")
        return rel

    def _duplicate(
        self,
        call: Call,
        sddc: SddcRec,
        task_type: str,
        reason: str,
        host_id: str | None = None,
        existing: TaskRec | None = None,
    ) -> None:
        self.state.counters.duplicate(
            {
                "at": call.now,
                "method": call.method,
                "path": call.path,
                "sddc_id": sddc.id,
                "host_id": host_id,
                "type": task_type,
                "reason": reason,
                "key": call.key,
                "existing_task_id": existing.id if existing else None,
            }
        )

    def _in_progress(self, call: Call, sddc: SddcRec, task_type: str, host_id: str | None = None) -> None:
        """409 OPERATION_IN_PROGRESS if a task of this type runs (on this host for host tasks)."""
        existing = self.state.find_active(sddc.id, task_type, host_id)
        if existing is not None:
            self._duplicate(call, sddc, task_type, "running", host_id, existing)
            raise ApiProblem(
                409,
                "OPERATION_IN_PROGRESS",
                f"{task_type} {existing.id} is already running on {host_id or sddc.id}",
                existing_task_id=existing.id,
            )

    def _not_rolling_back(self, sddc: SddcRec) -> None:
        rollback = self.state.find_active(sddc.id, "ROLLBACK")
        if rollback is not None:
            raise ApiProblem(409, "ROLLBACK_IN_PROGRESS", f"rollback {rollback.id} is running on {sddc.id}")

    def _path_supported(self, sddc: SddcRec, rel: ReleaseSpec) -> None:
        if sddc.version != rel.version and sddc.version not in rel.upgrade_from:
            raise ApiProblem(
                422,
                "UPGRADE_PATH_NOT_SUPPORTED",
                f"{sddc.id} is at {sddc.version}; {rel.version} upgrades only from "
                f"{', '.join(rel.upgrade_from) or 'nothing'}",
            )

    def _capacity(self, task_type: str, now: float) -> None:
        service = service_of(task_type)
        configured = self.state.config.capacity.get(service, math.inf)
        limit = self.state.faults.faults.capacity.get(service, configured)
        if len(self.state.active_by_service[service]) >= limit:
            end = self.state.earliest_end(service)
            delay = retry_after_seconds((end if end is not None else now + 1) - now)
            self.state.counters.capacity_503[service] += 1
            raise ApiProblem(
                503,
                "SERVICE_AT_CAPACITY",
                f"{service} runs {limit} tasks fleet-wide; retry later",
                retry_after=delay,
                service=service,
            )

    def _host(self, sddc: SddcRec, host_id: str) -> Host:
        host = sddc.host(host_id)
        if host is None:
            raise ApiProblem(404, "NOT_FOUND", f"host {host_id} not found in {sddc.id}")
        return host

    def _create(self, call: Call, sddc: SddcRec, task_type: str, **kw: Any) -> TaskRec:
        self._capacity(task_type, call.now)
        return self.state.create_task(
            sddc, task_type, call.now, trace_id=call.trace_id, parent_span_id=call.span_id, key=call.key, **kw
        )

    # ------------------------------------------------------------ operations

    def start_precheck(self, call: Call, sddc: SddcRec, target: str) -> TaskRec:
        self._release(target)
        self._in_progress(call, sddc, "PRECHECK")
        self._not_rolling_back(sddc)
        return self._create(call, sddc, "PRECHECK", params={"target_version": target})

    def start_snapshot(self, call: Call, sddc: SddcRec, label: str | None) -> TaskRec:
        self._in_progress(call, sddc, "SNAPSHOT")
        self._not_rolling_back(sddc)
        return self._create(call, sddc, "SNAPSHOT", params={"label": label})

    def start_component_upgrade(self, call: Call, sddc: SddcRec, component: str, target: str) -> TaskRec:
        rel = self._release(target)
        task_type = "UPGRADE_VCENTER" if component == "vcenter" else "UPGRADE_NSX"
        self._in_progress(call, sddc, task_type)
        self._not_rolling_back(sddc)
        current, wanted = (sddc.vcenter, rel.vcenter) if component == "vcenter" else (sddc.nsx, rel.nsx)
        if current == wanted:
            self._duplicate(call, sddc, task_type, "already_at_version")
            raise ApiProblem(409, "ALREADY_AT_VERSION", f"{component} of {sddc.id} is already at {wanted}")
        self._path_supported(sddc, rel)
        if component == "nsx" and sddc.vcenter != rel.vcenter:
            raise ApiProblem(409, "COMPONENT_ORDER", f"vcenter of {sddc.id} must reach {rel.vcenter} first")
        return self._create(call, sddc, task_type, params={"target_version": target})

    def set_maintenance(self, call: Call, sddc: SddcRec, host_id: str, enabled: bool) -> TaskRec:
        host = self._host(sddc, host_id)
        self._in_progress(call, sddc, "HOST_MAINTENANCE", host_id)
        self._not_rolling_back(sddc)
        if enabled:
            if host.state == "MAINTENANCE":
                # Already true: answered with a task that changes nothing, but counted.
                self._duplicate(call, sddc, "HOST_MAINTENANCE", "already_in_maintenance", host_id)
            else:
                self._cluster_capacity(sddc, host)
        else:
            upgrading = self.state.find_active(sddc.id, "UPGRADE_HOST", host_id)
            if upgrading is not None:
                raise ApiProblem(
                    409, "HOST_UPGRADE_IN_PROGRESS", f"host {host_id} is being upgraded by {upgrading.id}"
                )
        return self._create(call, sddc, "HOST_MAINTENANCE", host_id=host_id, params={"enabled": enabled})

    def _cluster_capacity(self, sddc: SddcRec, host: Host) -> None:
        for other in sddc.hosts:
            if other.id == host.id or other.cluster_id != host.cluster_id:
                continue
            entering = self.state.find_active(sddc.id, "HOST_MAINTENANCE", other.id)
            if other.state == "MAINTENANCE" or (entering is not None and entering.params.get("enabled")):
                raise ApiProblem(
                    409,
                    "CLUSTER_CAPACITY",
                    f"host {other.id} of cluster {host.cluster_id} is already in maintenance",
                )

    def start_host_upgrade(self, call: Call, sddc: SddcRec, host_id: str, target: str) -> TaskRec:
        rel = self._release(target)
        host = self._host(sddc, host_id)
        self._in_progress(call, sddc, "UPGRADE_HOST", host_id)
        self._not_rolling_back(sddc)
        if host.version == rel.esx:
            self._duplicate(call, sddc, "UPGRADE_HOST", "already_at_version", host_id)
            raise ApiProblem(409, "ALREADY_AT_VERSION", f"host {host_id} is already at {rel.esx}")
        self._path_supported(sddc, rel)
        if host.state != "MAINTENANCE":
            raise ApiProblem(409, "HOST_NOT_IN_MAINTENANCE", f"host {host_id} is {host.state}")
        if sddc.nsx != rel.nsx:
            raise ApiProblem(409, "COMPONENT_ORDER", f"nsx of {sddc.id} must reach {rel.nsx} first")
        return self._create(call, sddc, "UPGRADE_HOST", host_id=host_id, params={"target_version": target})

    def start_rollback(self, call: Call, sddc: SddcRec, snapshot_id: str) -> TaskRec:
        snap = self.state.snapshots.get(snapshot_id)
        if snap is None or snap.sddc_id != sddc.id:
            raise ApiProblem(404, "SNAPSHOT_NOT_FOUND", f"snapshot {snapshot_id} not found for {sddc.id}")
        self._in_progress(call, sddc, "ROLLBACK")
        return self._create(call, sddc, "ROLLBACK", params={"snapshot_id": snapshot_id})

    # ------------------------------------------------------------ drift (admin)

    def drift(self, body: dict[str, Any]) -> dict[str, Any]:
        """Change the real state out of band, as support staff or failures would."""
        kind = body.get("kind")
        if kind in ("task_failed", "task_purged"):
            return self._drift_task(str(kind), body)
        sddc = self.state.live_sddc(str(body.get("sddc_id", "")))
        if sddc is None:
            raise ApiProblem(404, "NOT_FOUND", f"SDDC {body.get('sddc_id')} not found")
        if kind == "sddc_removed":
            self.state.remove_sddc(sddc)
            return {"kind": kind, "sddc_id": sddc.id, "removed": True}
        if kind in ("host_maintenance", "host_disconnected", "host_reconnected"):
            host = self._host(sddc, str(body.get("host_id", "")))
            host.state = {
                "host_maintenance": "MAINTENANCE",
                "host_disconnected": "DISCONNECTED",
                "host_reconnected": "CONNECTED",
            }[kind]
        elif kind == "component_changed":
            self._drift_component(sddc, body)
        elif kind == "sddc_upgraded":
            rel = self._release(str(body.get("version", "")))
            sddc.vcenter, sddc.nsx = rel.vcenter, rel.nsx
            for host in sddc.hosts:
                host.version = rel.esx
        else:
            raise ApiProblem(422, "INVALID_DRIFT", f"unknown drift kind {kind!r}")
        self.state.recompute(sddc)
        return {"kind": kind, **self.state.sddc_view(sddc)}

    def _drift_component(self, sddc: SddcRec, body: dict[str, Any]) -> None:
        component = body.get("component")
        version = str(body.get("version", ""))
        rel = self.state.releases.get(version)
        if component not in ("vcenter", "nsx", "esx"):
            raise ApiProblem(422, "INVALID_DRIFT", "component must be vcenter, nsx or esx")
        build = getattr(rel, str(component)) if rel is not None else version
        if not build:
            raise ApiProblem(422, "INVALID_DRIFT", "version (a release or a raw build) is required")
        if component == "vcenter":
            sddc.vcenter = build
        elif component == "nsx":
            sddc.nsx = build
        else:
            host_id = body.get("host_id")
            hosts = [self._host(sddc, str(host_id))] if host_id else sddc.hosts
            for host in hosts:
                host.version = build

    def _drift_task(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """task_failed: a running task ends FAILED now (as if its host crashed under it);
        task_purged: the API forgets a task (GET answers 404), as a server losing its records would."""
        task_id = str(body.get("task_id", ""))
        task = self.state.tasks.get(task_id)
        if task is None:
            raise ApiProblem(404, "NOT_FOUND", f"task {task_id} not found")
        if kind == "task_purged":
            self.state.purge_task(task)
            return {"kind": kind, "task_id": task_id, "purged": True}
        if not task.active:
            raise ApiProblem(409, "TASK_NOT_ACTIVE", f"task {task_id} already ended {task.status}")
        code = str(body.get("code") or "FAILED_OUT_OF_BAND")
        error = {"code": code, "message": "failed out of band", "retryable": True}
        self.state.fail_task(task, time.time(), error)
        return {"kind": kind, "task_id": task_id, "status": task.status}
