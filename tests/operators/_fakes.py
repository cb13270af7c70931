"""Real API models and a small stand-in for PhaseRun, for the phase decision tests.

`next_step` only reads the run's release, ledger progress and operations, counts and
appends events, and (postcheck) asks the hook for health; failing goes through
`ledger_phase_failed` and `is_last_try`. FakeRun provides exactly that; nothing talks HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rce_lib.api.models import Health, Host, Release, Sddc
from rce_lib.ledger.models import Phase, Progress, Status

SDDC_ID = "sddc-0001"
TARGET = "1.26.0"

RELEASES = {
    "1.24.0": Release.model_validate(
        {
            "version": "1.24.0",
            "components": {"vcenter": "8.0.2-vc", "nsx": "4.1.2-nsx", "esx": "8.0.2-esx"},
            "upgrade_from": [],
        }
    ),
    "1.25.0": Release.model_validate(
        {
            "version": "1.25.0",
            "components": {"vcenter": "8.0.3-vc25", "nsx": "4.2.0-nsx25", "esx": "8.0.3-esx25"},
            "upgrade_from": ["1.24.0"],
        }
    ),
    "1.26.0": Release.model_validate(
        {
            "version": "1.26.0",
            "components": {"vcenter": "8.0.3-vc26", "nsx": "4.2.1-nsx26", "esx": "8.0.3-esx26"},
            "upgrade_from": ["1.25.0"],
        }
    ),
}


def host(host_id: str, cluster: str, version: str, state: str = "CONNECTED") -> Host:
    return Host.model_validate({"id": host_id, "cluster_id": cluster, "version": version, "state": state})


def sddc(
    version: str = "1.25.0",
    *,
    vcenter: str | None = None,
    nsx: str | None = None,
    hosts: list[Host] | None = None,
    status: str = "READY",
) -> Sddc:
    """An SDDC at `version`'s builds unless components or hosts are given."""
    rel = RELEASES[version].components
    hosts = (
        hosts
        if hosts is not None
        else [
            host("sddc-0001-c1-h1", "sddc-0001-c1", rel.esx),
            host("sddc-0001-c1-h2", "sddc-0001-c1", rel.esx),
        ]
    )
    return Sddc.model_validate(
        {
            "id": SDDC_ID,
            "org_id": "org-001",
            "region": "us-east-1",
            "version": version,
            "status": status,
            "host_count": len(hosts),
            "labels": {},
            "components": {"vcenter": vcenter or rel.vcenter, "nsx": nsx or rel.nsx},
            "hosts": [h.model_dump() for h in hosts],
        }
    )


def progress(*, snapshot_id: str | None = None, source_version: str | None = "1.25.0") -> Progress:
    now = datetime.now(UTC)
    return Progress(
        rollout="r",
        wave="w",
        sddc_id=SDDC_ID,
        run_id="run-1",
        phase=Phase.SNAPSHOT,
        status=Status.RUNNING,
        attempts=1,
        source_version=source_version,
        target_version=TARGET,
        snapshot_id=snapshot_id,
        updated_at=now,
        version=1,
    )


@dataclass
class FakeHook:
    """Records the calls a Step's `call` makes; answers health."""

    health: Health | None = None
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def get_health(self, sddc_id: str) -> Health:
        assert self.health is not None, "this test did not expect a health read"
        return self.health

    def __getattr__(self, name: str) -> Any:
        if not name.startswith(("start_", "set_host_")):
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            return "started"

        return record


@dataclass
class FakeRun:
    """What next_step reads of a PhaseRun, and what failing writes."""

    release: Release = field(default_factory=lambda: RELEASES[TARGET])
    ledger_progress: Progress | None = None
    succeeded_ops: set[tuple[str, str | None]] = field(default_factory=set)
    operations: dict[tuple[str, str | None], Any] = field(default_factory=dict)
    source: Release | None = None
    hook: FakeHook = field(default_factory=FakeHook)
    is_last_try: bool = False
    events: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    pacer: None = None  # pacing off: tests/operators/test_pacing.py runs it for real

    def progress(self) -> Progress | None:
        return self.ledger_progress

    def take_slot(
        self, service: str, op: str, host_id: str | None, *, yield_to_waiters: bool = False
    ) -> None:
        return None

    def give_slot(self, op: str, host_id: str | None) -> None:
        pass

    def give_all_slots(self) -> int:
        return 0

    def typical_duration(self, op: str) -> float | None:
        return None

    def record_duration(self, op: str, seconds: float) -> None:
        pass

    def operation_succeeded(self, op: str, host_id: str | None = None) -> bool:
        return (op, host_id) in self.succeeded_ops

    def get_operation(self, op: str, host_id: str | None) -> Any:
        return self.operations.get((op, host_id))

    def source_release(self) -> Release | None:
        return self.source

    def snapshot_id(self) -> str | None:
        return self.ledger_progress.snapshot_id if self.ledger_progress else None

    def count_event(self, kind: str) -> int:
        return sum(1 for k, _, _ in self.events if k == kind)

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((kind, message, data))

    def ledger_phase_started(self, phase: str) -> None:
        self.started.append(phase)

    def ledger_phase_failed(
        self, phase: str, reason: str, code: str, message: str, *, retryable: bool, verdict: bool
    ) -> None:
        self.failures.append(
            {"phase": phase, "reason": str(reason), "code": code, "retryable": retryable, "verdict": verdict}
        )


def phase_kwargs() -> dict[str, Any]:
    return {"sddc_id": SDDC_ID, "target_version": TARGET, "rollout": "r", "wave": "w"}
