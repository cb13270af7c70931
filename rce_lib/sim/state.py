"""The fleet store: SDDCs, tasks, snapshots, idempotency keys, and the clock-driven
`advance(now)` that applies task completions in time order before any request is served.

Tasks run on the wall clock (time.time()): a task is QUEUED for a moment, RUNNING with a
progress until created_at + duration, then terminal. Nothing ticks in the background;
each request first calls `advance(now)`, which pops due tasks from a heap and applies
their effects in the order they ended. So state computed after a restart is the same
as if the simulator had never stopped.
"""

from __future__ import annotations

import heapq
import random
import time
from datetime import UTC, datetime
from typing import Any

from rce_lib.api.models import TaskType
from rce_lib.api.services import TASK_SERVICE
from rce_lib.sim.config import ReleaseSpec, SimConfig
from rce_lib.sim.counters import SERVICES, Counters
from rce_lib.sim.faults import FaultEngine, Faults
from rce_lib.sim.fleet import generate_fleet
from rce_lib.sim.model import HOST_TASKS, Dirty, IdemRec, SddcRec, Snapshot, TaskRec
from rce_lib.sim.persist import Disk

UPGRADING_TYPES = ("SNAPSHOT", "UPGRADE_VCENTER", "UPGRADE_NSX", "HOST_MAINTENANCE", "UPGRADE_HOST")


def iso(ts: float) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def service_of(task_type: str) -> str:
    return TASK_SERVICE[TaskType(task_type)].value


class FleetState:
    """All simulator state plus the indexes that keep each request O(tasks of one SDDC)."""

    def __init__(self, config: SimConfig, disk: Disk | None = None) -> None:
        self.config = config
        self.disk = disk
        self.releases: dict[str, ReleaseSpec] = {r.version: r for r in config.releases}
        self.sddcs: dict[str, SddcRec] = {}
        self.tasks: dict[str, TaskRec] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.idem: dict[str, IdemRec] = {}
        self.seq = 0
        self.counters = Counters(config.details_max)
        self.faults = FaultEngine(config.seed)
        self.rng = random.Random(config.seed ^ 0x5EED)
        self.dirty = Dirty()
        self.counters_dirty = False
        # indexes
        self.tasks_by_sddc: dict[str, list[str]] = {}
        self.active_by_sddc: dict[str, dict[str, TaskRec]] = {}
        self.active_by_service: dict[str, dict[str, TaskRec]] = {s: {} for s in SERVICES}
        self.heap: list[tuple[float, int, str]] = []
        self.sorted_ids: list[str] = []

    # ---------------------------------------------------------------- setup / disk

    def bootstrap(self) -> None:
        """Load the state dir if it holds state (it wins over the seed), else generate the fleet."""
        if self.disk is not None and self.disk.has_state():
            self._load(self.disk)
            return
        for sddc in generate_fleet(self.config.seed, self.config.size, self.config.releases):
            self.sddcs[sddc.id] = sddc
            self.dirty.sddcs.add(sddc.id)
        self.dirty.meta = True
        self._reindex()
        self.flush(counters=True)

    def _load(self, disk: Disk) -> None:
        for row in disk.rows("sddcs"):
            sddc = SddcRec.from_row(row)
            self.sddcs[sddc.id] = sddc
        for row in disk.rows("tasks"):
            task = TaskRec.from_row(row)
            self.tasks[task.id] = task
        for row in disk.rows("snapshots"):
            snap = Snapshot.from_row(row)
            self.snapshots[snap.id] = snap
        for row in disk.rows("idem"):
            rec = IdemRec.from_row(row)
            self.idem[rec.key] = rec
        self._prune(disk, time.time() - self.config.task_retention_s)
        self.seq = int(disk.meta("seq") or 0)
        counters = disk.meta("counters")
        if counters:
            self.counters.load(counters)
        faults = disk.meta("faults")
        if faults:
            self.faults.faults = Faults.model_validate(faults)
        self._reindex()

    def _prune(self, disk: Disk, cutoff: float) -> None:
        """Forget terminal tasks older than the retention (the contract keeps them >= 7 days)."""
        old = [t.id for t in self.tasks.values() if not t.active and (t.finished_at or t.ends_at) < cutoff]
        if not old:
            return
        gone = set(old)
        keys = [k for k, rec in self.idem.items() if rec.task_id in gone]
        for task_id in old:
            del self.tasks[task_id]
        for k in keys:
            del self.idem[k]
        disk.delete("tasks", old)
        disk.delete("idem", keys)

    def _reindex(self) -> None:
        self.sorted_ids = sorted(i for i, s in self.sddcs.items() if not s.removed)
        self.tasks_by_sddc = {}
        self.active_by_sddc = {}
        self.active_by_service = {s: {} for s in SERVICES}
        self.heap = []
        for task in sorted(self.tasks.values(), key=lambda t: t.seq):
            self.tasks_by_sddc.setdefault(task.sddc_id, []).append(task.id)
            if task.active:
                self._activate(task)

    def _activate(self, task: TaskRec) -> None:
        self.active_by_sddc.setdefault(task.sddc_id, {})[task.id] = task
        self.active_by_service[service_of(task.type)][task.id] = task
        heapq.heappush(self.heap, (task.ends_at, task.seq, task.id))

    def _deactivate(self, task: TaskRec) -> None:
        self.active_by_sddc.get(task.sddc_id, {}).pop(task.id, None)
        self.active_by_service[service_of(task.type)].pop(task.id, None)

    def flush(self, *, counters: bool = False) -> None:
        """Write what changed. State changes always; counters only when asked (periodic)."""
        if self.disk is None:
            self.dirty = Dirty()
            return
        changes: dict[str, list[tuple[str, Any]]] = {}
        d = self.dirty
        if d.sddcs:
            changes["sddcs"] = [(i, self.sddcs[i].to_row()) for i in d.sddcs if i in self.sddcs]
        if d.tasks:
            changes["tasks"] = [(i, self.tasks[i].to_row()) for i in d.tasks]
        if d.snapshots:
            changes["snapshots"] = [(i, self.snapshots[i].to_row()) for i in d.snapshots]
        if d.idem:
            changes["idem"] = [(k, self.idem[k].to_row()) for k in d.idem]
        meta: list[tuple[str, Any]] = []
        if d.meta:
            meta += [("initialized", True), ("seq", self.seq), ("faults", self.faults.faults.model_dump())]
        if counters and self.counters_dirty:
            meta.append(("counters", self.counters.dump(self.current_concurrency())))
            self.counters_dirty = False
        if meta:
            changes["meta"] = meta
        self.dirty = Dirty()
        if changes:
            self.disk.write(changes)

    # ---------------------------------------------------------------- clock

    def advance(self, now: float) -> None:
        """Apply every task completion due by `now`, in the order the tasks ended."""
        while self.heap and self.heap[0][0] <= now:
            ends_at, _, task_id = heapq.heappop(self.heap)
            task = self.tasks.get(task_id)
            if task is None or not task.active:
                continue
            self._complete(task, ends_at)

    def _complete(self, task: TaskRec, at: float) -> None:
        sddc = self.sddcs.get(task.sddc_id)
        task.finished_at = at
        task.status = "SUCCEEDED"
        if sddc is None or sddc.removed:
            self._fail(
                task, {"code": "SDDC_REMOVED", "message": "the SDDC no longer exists", "retryable": False}
            )
        elif task.planned_error is not None:
            self._fail(task, task.planned_error)
        else:
            self._apply(task, sddc)
            self._recompute_version(sddc)
            self.dirty.sddcs.add(sddc.id)
        self._deactivate(task)
        self.dirty.tasks.add(task.id)

    @staticmethod
    def _fail(task: TaskRec, error: dict[str, Any]) -> None:
        task.status = "FAILED"
        task.error = dict(error)

    def _apply(self, task: TaskRec, sddc: SddcRec) -> None:
        """The effect of a successful task on the SDDC."""
        target = self.releases.get(str(task.params.get("target_version", "")))
        host = sddc.host(task.host_id) if task.host_id else None
        kind = task.type
        if kind == "PRECHECK":
            findings = self.precheck_findings(sddc, str(task.params["target_version"]), exclude=task.id)
            task.result = {"findings": findings}
            if findings:
                self._fail(
                    task,
                    {
                        "code": "PRECHECK_BLOCKED",
                        "retryable": False,
                        "message": "; ".join(f["detail"] for f in findings),
                    },
                )
        elif kind == "SNAPSHOT":
            snap = Snapshot(
                id=f"snap-{task.seq:06d}-{sddc.id}"[:64],
                sddc_id=sddc.id,
                version=sddc.version,
                vcenter=sddc.vcenter,
                nsx=sddc.nsx,
                hosts={h.id: h.version for h in sddc.hosts},
                created_at=task.finished_at or task.ends_at,
            )
            self.snapshots[snap.id] = snap
            self.dirty.snapshots.add(snap.id)
            task.result = {"snapshot_id": snap.id, "version": snap.version}
        elif kind == "UPGRADE_VCENTER" and target is not None:
            sddc.vcenter = target.vcenter
        elif kind == "UPGRADE_NSX" and target is not None:
            sddc.nsx = target.nsx
        elif kind in HOST_TASKS:
            self._apply_host(task, host)
        elif kind == "ROLLBACK":
            self._restore(sddc, self.snapshots[str(task.params["snapshot_id"])])

    def _apply_host(self, task: TaskRec, host: Any) -> None:
        if host is None or host.state == "DISCONNECTED":
            self._fail(
                task,
                {
                    "code": "HOST_UNREACHABLE",
                    "message": f"host {task.host_id} is not reachable",
                    "retryable": True,
                },
            )
            return
        if task.type == "HOST_MAINTENANCE":
            host.state = "MAINTENANCE" if task.params.get("enabled") else "CONNECTED"
        else:
            target = self.releases[str(task.params["target_version"])]
            host.version = target.esx

    @staticmethod
    def _restore(sddc: SddcRec, snap: Snapshot) -> None:
        sddc.vcenter, sddc.nsx = snap.vcenter, snap.nsx
        for host in sddc.hosts:
            if host.id in snap.hosts:
                host.version = snap.hosts[host.id]
            if host.state == "MAINTENANCE":
                host.state = "CONNECTED"
        sddc.version = snap.version

    def _recompute_version(self, sddc: SddcRec) -> None:
        """The SDDC's version moves only once vcenter, nsx and every host match one release."""
        for rel in self.releases.values():
            if (
                sddc.vcenter == rel.vcenter
                and sddc.nsx == rel.nsx
                and all(h.version == rel.esx for h in sddc.hosts)
            ):
                sddc.version = rel.version
                return

    # ---------------------------------------------------------------- queries

    def precheck_findings(
        self, sddc: SddcRec, target: str, exclude: str | None = None
    ) -> list[dict[str, Any]]:
        findings: list[dict[str, Any]] = []
        rel = self.releases.get(target)
        if rel is None:
            findings.append({"code": "UNKNOWN_RELEASE", "detail": f"release {target} does not exist"})
        elif sddc.version != target and sddc.version not in rel.upgrade_from:
            findings.append(
                {
                    "code": "UPGRADE_PATH_NOT_SUPPORTED",
                    "detail": f"{sddc.version} cannot upgrade straight to {target}",
                }
            )
        for host in sddc.hosts:
            if host.state == "DISCONNECTED":
                findings.append(
                    {
                        "code": "HOST_DISCONNECTED",
                        "host_id": host.id,
                        "detail": f"host {host.id} is disconnected",
                    }
                )
        status = self.sddc_status(sddc, exclude=exclude)
        if status != "READY":
            findings.append({"code": "SDDC_NOT_READY", "detail": f"SDDC status is {status}"})
        return findings

    def sddc_status(self, sddc: SddcRec, exclude: str | None = None) -> str:
        active = [t for t in self.active_by_sddc.get(sddc.id, {}).values() if t.id != exclude]
        if any(t.type == "ROLLBACK" for t in active):
            return "ROLLING_BACK"
        if any(h.state == "DISCONNECTED" for h in sddc.hosts) or self.faults.unhealthy(sddc.id, sddc.version):
            return "DEGRADED"
        if any(t.type in UPGRADING_TYPES for t in active):
            return "UPGRADING"
        return "READY"

    def find_active(self, sddc_id: str, task_type: str, host_id: str | None = None) -> TaskRec | None:
        for task in self.active_by_sddc.get(sddc_id, {}).values():
            if task.type == task_type and (host_id is None or task.host_id == host_id):
                return task
        return None

    def current_concurrency(self) -> dict[str, int]:
        return {s: len(tasks) for s, tasks in self.active_by_service.items()}

    def earliest_end(self, service: str) -> float | None:
        tasks = self.active_by_service[service]
        return min((t.ends_at for t in tasks.values()), default=None)

    def live_sddc(self, sddc_id: str) -> SddcRec | None:
        sddc = self.sddcs.get(sddc_id)
        return None if sddc is None or sddc.removed else sddc

    # ---------------------------------------------------------------- mutation primitives

    def create_task(
        self,
        sddc: SddcRec,
        task_type: str,
        now: float,
        *,
        host_id: str | None = None,
        params: dict[str, Any] | None = None,
        trace_id: str | None = None,
        key: str | None = None,
        parent_span_id: str | None = None,
    ) -> TaskRec:
        self.seq += 1
        duration = self.config.real_duration(task_type)
        task = TaskRec(
            id=f"task-{self.seq:06d}-{self.rng.getrandbits(24):06x}",
            seq=self.seq,
            sddc_id=sddc.id,
            host_id=host_id,
            type=task_type,
            created_at=now,
            queued_until=now + min(self.config.queued_s, duration / 10),
            ends_at=now + duration,
            trace_id=trace_id,
            params=params or {},
            planned_error=self.faults.planned_task_error(task_type, sddc.id, task_type in HOST_TASKS),
            idempotency_key=key,
            parent_span_id=parent_span_id,
        )
        if task_type == "ROLLBACK":
            self._cancel_active(sddc.id, now)
        self.tasks[task.id] = task
        self.tasks_by_sddc.setdefault(sddc.id, []).append(task.id)
        self._activate(task)
        service = service_of(task_type)
        self.counters.tasks_created[task_type] += 1
        self.counters.concurrency(service, len(self.active_by_service[service]))
        self.dirty.tasks.add(task.id)
        self.dirty.meta = True
        return task

    def _cancel_active(self, sddc_id: str, now: float) -> None:
        """A rollback supersedes whatever else runs on the SDDC."""
        for task in list(self.active_by_sddc.get(sddc_id, {}).values()):
            task.status = "CANCELED"
            task.finished_at = now
            task.error = {
                "code": "CANCELED_BY_ROLLBACK",
                "message": "superseded by a rollback",
                "retryable": False,
            }
            self._deactivate(task)
            self.dirty.tasks.add(task.id)

    def fail_task(self, task: TaskRec, now: float, error: dict[str, Any]) -> None:
        """End an active task FAILED now, without its effect (drift injection)."""
        task.finished_at = now
        self._fail(task, error)
        self._deactivate(task)
        self.dirty.tasks.add(task.id)

    def purge_task(self, task: TaskRec) -> None:
        """Forget a task and the keys bound to it (drift injection): GET then answers 404."""
        self._deactivate(task)
        del self.tasks[task.id]
        ids = self.tasks_by_sddc.get(task.sddc_id, [])
        if task.id in ids:
            ids.remove(task.id)
        keys = [k for k, rec in self.idem.items() if rec.task_id == task.id]
        for key in keys:
            del self.idem[key]
        self.dirty.tasks.discard(task.id)
        self.dirty.idem.difference_update(keys)
        if self.disk is not None:
            self.disk.delete("tasks", [task.id])
            self.disk.delete("idem", keys)

    def bind_key(self, key: str, fingerprint: str, task: TaskRec, now: float) -> None:
        self.idem[key] = IdemRec(key=key, fingerprint=fingerprint, task_id=task.id, created_at=now)
        self.dirty.idem.add(key)

    def remove_sddc(self, sddc: SddcRec) -> None:
        sddc.removed = True
        self.sorted_ids = [i for i in self.sorted_ids if i != sddc.id]
        self.dirty.sddcs.add(sddc.id)

    def recompute(self, sddc: SddcRec) -> None:
        self._recompute_version(sddc)
        self.dirty.sddcs.add(sddc.id)

    # ---------------------------------------------------------------- views

    def task_view(self, task: TaskRec, now: float) -> dict[str, Any]:
        if task.active:
            span = max(task.ends_at - task.created_at, 1e-9)
            if now < task.queued_until:
                status, progress = "QUEUED", 0
            else:
                status = "RUNNING"
                progress = max(0, min(99, int(100 * (now - task.created_at) / span)))
                if self.faults.roll(self.faults.faults.unknown_task_status_rate):
                    status = self.faults.faults.unknown_task_status
                    self.counters.injected["unknown_status"] += 1
            updated = task.created_at if status == "QUEUED" else max(task.created_at, min(now, task.ends_at))
        else:
            status = task.status
            finished = task.finished_at if task.finished_at is not None else task.ends_at
            span = max(task.ends_at - task.created_at, 1e-9)
            progress = (
                100
                if status == "SUCCEEDED"
                else max(0, min(99, int(100 * (finished - task.created_at) / span)))
            )
            updated = finished
        return {
            "id": task.id,
            "sddc_id": task.sddc_id,
            "host_id": task.host_id,
            "type": task.type,
            "status": status,
            "progress_percent": progress,
            "created_at": iso(task.created_at),
            "updated_at": iso(updated),
            "trace_id": task.trace_id,
            "result": task.result,
            "error": task.error,
        }

    def summary_view(self, sddc: SddcRec) -> dict[str, Any]:
        return {
            "id": sddc.id,
            "org_id": sddc.org_id,
            "name": sddc.name,
            "region": sddc.region,
            "version": sddc.version,
            "status": self.sddc_status(sddc),
            "host_count": len(sddc.hosts),
            "labels": dict(sddc.labels),
            "maintenance_window": sddc.maintenance_window,
        }

    def sddc_view(self, sddc: SddcRec) -> dict[str, Any]:
        view = self.summary_view(sddc)
        view["components"] = {"vcenter": sddc.vcenter, "nsx": sddc.nsx}
        view["hosts"] = [
            {"id": h.id, "cluster_id": h.cluster_id, "version": h.version, "state": h.state}
            for h in sddc.hosts
        ]
        active = self.active_by_sddc.get(sddc.id, {})
        view["active_task_ids"] = sorted(active, key=lambda i: self.tasks[i].seq)
        return view

    def release_view(self, rel: ReleaseSpec) -> dict[str, Any]:
        return {
            "version": rel.version,
            "components": {"vcenter": rel.vcenter, "nsx": rel.nsx, "esx": rel.esx},
            "upgrade_from": list(rel.upgrade_from),
        }

    def dump(self, now: float) -> dict[str, Any]:
        """GET /sim/state: the whole fleet, snapshots and active tasks."""
        return {
            "now": iso(now),
            "config": {
                "seed": self.config.seed,
                "size": self.config.size,
                "time_scale": self.config.time_scale,
                "capacity": self.config.capacity,
                "durations_s": self.config.durations_s,
            },
            "releases": [self.release_view(r) for r in self.releases.values()],
            "sddcs": [self.sddc_view(self.sddcs[i]) for i in self.sorted_ids],
            "removed_sddc_ids": sorted(i for i, s in self.sddcs.items() if s.removed),
            "snapshots": [s.to_row() for s in self.snapshots.values()],
            "active_tasks": [
                self.task_view(t, now) for s in self.active_by_service.values() for t in s.values()
            ],
            "task_count": len(self.tasks),
            "idempotency_key_count": len(self.idem),
            "concurrency": self.current_concurrency(),
        }
