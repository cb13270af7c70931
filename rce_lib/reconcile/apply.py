"""Carry reconciliation out: read both sides, ask the rules, make the safe repairs
through SddcApiHook and the Ledger, and record one ledger event per finding.

No Airflow here: the sweep operators and the phase operators give it a hook, a
ledger and (for the sweep) a way to ask whether a run still runs.

* Every repair is idempotent and guarded: ledger changes are compare-and-set (record
  version, operation generation, the exact claim), a downstream start uses a
  deterministic Idempotency-Key, so two sweeps (or a sweep and a phase) racing each
  other repair once.
* A finding that needs a human is recorded once (event `drift_detected`) and stays
  open until a later pass no longer finds it (event `drift_resolved`); a pass that
  finds it again does not count it as new.
* A dry run reads and judges, and writes nothing anywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.api.models import HostState, Release, Sddc, Task, TaskStatus
from rce_lib.errors import ApiError, ContractViolation, RceError
from rce_lib.ledger import Ledger, LedgerCorrupt, ProgressChanges, StaleGeneration
from rce_lib.ledger.models import EventKind, Phase, Progress, Status
from rce_lib.reconcile.drift import (
    Finding,
    LedgerView,
    RealView,
    RepairKind,
    RuleContext,
    RunState,
)
from rce_lib.reconcile.rules import TERMINAL_TASK_STATUSES, PhaseDecision, corrupt_row, decide, find_drift

if TYPE_CHECKING:
    from rce_lib.hooks.sddc_api import SddcApiHook

log = logging.getLogger(__name__)

Outcome = Literal["repaired", "flagged", "open", "skipped", "failed", "would_repair", "would_flag"]
NEW_OUTCOMES: frozenset[str] = frozenset({"repaired", "flagged", "failed", "would_repair", "would_flag"})
RunStateOf = Callable[[str, str], RunState]
"""(wave, run_id) -> the state of the run in Airflow."""


class FindingOutcome(BaseModel):
    """A finding and what became of it (XCom-safe: plain JSON)."""

    model_config = ConfigDict(frozen=True)

    finding: Finding
    outcome: Outcome
    detail: str = ""

    @property
    def new(self) -> bool:
        return self.outcome in NEW_OUTCOMES


class SddcReport(BaseModel):
    """One SDDC's reconciliation: its findings, or why it could not be judged."""

    sddc_id: str
    outcomes: list[FindingOutcome] = Field(default_factory=list)
    resolved: list[str] = Field(default_factory=list)
    """Fingerprints of open findings that are gone now."""
    error: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """One pass over SDDCs with one hook and one ledger (a sweep batch, or one phase)."""

    def __init__(
        self,
        ledger: Ledger,
        hook: SddcApiHook,
        *,
        by: str,
        run_id: str,
        dry_run: bool = False,
        lease_s: float = 6 * 3600.0,
        inline_wait_s: float = 5.0,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ledger = ledger
        self.hook = hook
        self.by = by
        """Who reconciles: `sweep`, or `phase:<phase>` in flight (event data `by`)."""
        self.run_id = run_id
        """The Airflow run reconciling (the sweep's run, or the phase's wave run)."""
        self.dry_run = dry_run
        self.lease_s = lease_s
        self.inline_wait_s = inline_wait_s
        self._clock = clock
        self._sleep = sleep
        self._releases: dict[str, Release | None] = {}
        self._in_flight = False
        self._api_writes = 0
        """Downstream work started by repairs (a read taken before one is stale)."""

    # ------------------------------------------------------------------ entry points

    def sweep_sddc(self, sddc_id: str, run_state_of: RunStateOf) -> SddcReport:
        """Reconcile one SDDC's current ledger record with the fleet (the fleet sweep)."""
        report = SddcReport(sddc_id=sddc_id)
        findings: list[Finding] = []
        view = self._sweep_view(sddc_id, run_state_of, findings)
        judged = {f.rollout + "/" + f.wave for f in findings}
        if view is not None:
            judged.add(f"{view.rollout}/{view.wave}")
            real = self._real(view, watched=view.run_state is RunState.RUNNING)
            findings += find_drift(view, real, RuleContext(now=self._clock(), lease_s=self.lease_s))
        self._settle(view, findings, report, judged)
        return report

    def before_phase(
        self,
        *,
        rollout: str,
        wave: str,
        sddc_id: str,
        phase: Phase,
        target_version: str,
        target: Release | None = None,
        source: Release | None = None,
        sddc: Sddc | None = None,
    ) -> PhaseDecision:
        """Reconcile one SDDC before a phase acts on it (in flight); the phase is the watcher.

        `sddc`: the SDDC as the phase read it moments ago in the same execution (nothing
        written since), judged instead of reading it again. The decision carries the SDDC
        judged unless a repair changed something downstream (then the phase reads anew)."""
        phase = Phase(phase)
        self._in_flight = True
        writes = self._api_writes
        try:
            progress = self.ledger.get(rollout, wave, sddc_id)
            operations = tuple(self.ledger.operations_of(rollout, wave, sddc_id))
        except LedgerCorrupt as exc:
            finding = corrupt_row(rollout, wave, sddc_id, str(exc))
            self._settle(None, [finding], SddcReport(sddc_id=sddc_id), {f"{rollout}/{wave}"})
            return decide([finding])
        source_version = progress.source_version if progress else None
        view = LedgerView(
            rollout=rollout,
            wave=wave,
            sddc_id=sddc_id,
            progress=progress,
            operations=operations,
            run_state=RunState.RUNNING,
            source=source or (self._release(source_version) if source_version else None),
            target=target or self._release(target_version),
        )
        real = self._real(view, watched=False, sddc=sddc)
        findings = find_drift(view, real, RuleContext(now=self._clock(), phase=phase, lease_s=self.lease_s))
        self._settle(view, findings, SddcReport(sddc_id=sddc_id), {f"{rollout}/{wave}"})
        decision = decide(findings)
        if real.sddc is not None and self._api_writes == writes:
            decision = replace(decision, sddc=real.sddc)
        return decision

    # ------------------------------------------------------------------ reading

    def _sweep_view(
        self, sddc_id: str, run_state_of: RunStateOf, findings: list[Finding]
    ) -> LedgerView | None:
        """The record the SDDC is judged against: its claim holder's, else the latest one.

        None (nothing judged against reality) when that record is unknown: no record at all,
        or one that does not parse and might be the latest."""
        records = self.ledger.progress_of_sddc(sddc_id)
        parsed = [r for r in records if isinstance(r, Progress)]
        for bad in (r for r in records if isinstance(r, LedgerCorrupt)):
            rollout, wave, *_ = [*bad.key.split("/"), "?", "?"]
            findings.append(corrupt_row(rollout, wave, sddc_id, str(bad)))
        try:
            claim = self.ledger.claim_of(sddc_id)
        except LedgerCorrupt as exc:
            findings.append(corrupt_row("-", "-", sddc_id, str(exc)))
            claim = None
        if claim is not None:
            rollout, wave = claim.rollout, claim.wave
            progress = next((p for p in parsed if (p.rollout, p.wave) == (rollout, wave)), None)
            if progress is None and any(f.rollout == rollout and f.wave == wave for f in findings):
                return None  # the holder's record does not parse: judged by a human, not guessed
        elif parsed and not findings:
            progress = max(parsed, key=lambda p: p.updated_at)
            rollout, wave = progress.rollout, progress.wave
        else:
            return None
        try:
            operations = tuple(self.ledger.operations_of(rollout, wave, sddc_id))
        except LedgerCorrupt as exc:
            findings.append(corrupt_row(rollout, wave, sddc_id, str(exc)))
            return None
        return LedgerView(
            rollout=rollout,
            wave=wave,
            sddc_id=sddc_id,
            progress=progress,
            operations=operations,
            claim=claim,
            run_state=run_state_of(wave, progress.run_id) if progress else RunState.ENDED,
            claim_run_state=run_state_of(claim.wave, claim.run_id) if claim else RunState.UNKNOWN,
            source=self._release(progress.source_version) if progress and progress.source_version else None,
            target=self._release(progress.target_version) if progress and progress.target_version else None,
        )

    def _release(self, version: str) -> Release | None:
        if version not in self._releases:
            try:
                self._releases[version] = self.hook.get_release(version)
            except ApiError as err:
                if err.status != 404:
                    raise
                self._releases[version] = None
        return self._releases[version]

    def _real(self, view: LedgerView, *, watched: bool, sddc: Sddc | None = None) -> RealView:
        """The SDDC as the API sees it (`sddc` when the caller just read it), plus the tasks
        the rules may judge."""
        if sddc is None or sddc.id != view.sddc_id:
            try:
                sddc = self.hook.get_sddc(view.sddc_id)
            except ContractViolation as exc:
                return RealView(sddc=None, violation=exc.message)
            except ApiError as err:
                if err.status == 404:
                    return RealView(sddc=None, removed=True)
                raise
        task_ids: list[str] = []
        progress = view.progress
        for op in view.operations:
            if not op.task_id:
                continue
            unfinished = (op.status or "") not in TERMINAL_TASK_STATUSES
            lost_snapshot = op.phase is Phase.SNAPSHOT and progress is not None and not progress.snapshot_id
            if (unfinished and not watched) or lost_snapshot:
                task_ids.append(op.task_id)
        if any(h.state is HostState.MAINTENANCE for h in sddc.hosts):
            task_ids += sddc.active_task_ids
        return RealView(sddc=sddc, tasks={t: self._task(t) for t in dict.fromkeys(task_ids)})

    def _task(self, task_id: str) -> Task | None:
        try:
            return self.hook.get_task(task_id)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    # ------------------------------------------------------------------ settling

    def _settle(
        self, view: LedgerView | None, findings: list[Finding], report: SddcReport, judged: set[str]
    ) -> None:
        """Repair or flag each finding, record it, and close open findings no longer found."""
        sddc_id = report.sddc_id
        open_ = self._open_findings(sddc_id)
        for finding in findings:
            outcome = self._outcome(view, finding, open_)
            report.outcomes.append(outcome)
            log.log(
                logging.INFO if finding.safe else logging.WARNING,
                "%s %s: %s -> %s %s",
                sddc_id,
                finding.kind.value,
                finding.repair.value,
                outcome.outcome,
                outcome.detail or finding.message,
            )
        found = {f.fingerprint for f in findings}
        for fingerprint, (rollout, wave, kind) in open_.items():
            if fingerprint in found or f"{rollout}/{wave}" not in judged:
                continue
            report.resolved.append(fingerprint)
            if not self.dry_run:
                self.ledger.append_event(
                    rollout,
                    wave,
                    EventKind.DRIFT_RESOLVED,
                    sddc_id=sddc_id,
                    run_id=self.run_id,
                    message=f"[{kind}] no longer found",
                    data={"drift": kind, "fingerprint": fingerprint, "by": self.by},
                )

    def _open_findings(self, sddc_id: str) -> dict[str, tuple[str, str, str]]:
        """Findings flagged for a human and not resolved since: fingerprint -> (rollout, wave, kind)."""
        open_: dict[str, tuple[str, str, str]] = {}
        kinds = [EventKind.DRIFT_DETECTED, EventKind.DRIFT_RESOLVED]
        for event in self.ledger.events(sddc_id=sddc_id, kinds=kinds, limit=10_000):
            fingerprint = str(event.data.get("fingerprint", ""))
            if event.kind == EventKind.DRIFT_RESOLVED:
                open_.pop(fingerprint, None)
            elif event.data.get("outcome") == "flagged":
                open_[fingerprint] = (event.rollout, event.wave, str(event.data.get("drift", "")))
        return open_

    def _outcome(
        self, view: LedgerView | None, finding: Finding, open_: dict[str, tuple[str, str, str]]
    ) -> FindingOutcome:
        if not finding.safe:
            if finding.fingerprint in open_:
                return FindingOutcome(finding=finding, outcome="open", detail="flagged earlier, still open")
            if self.dry_run:
                return FindingOutcome(finding=finding, outcome="would_flag")
            self._record(finding, "flagged")
            return FindingOutcome(finding=finding, outcome="flagged")
        if self.dry_run:
            return FindingOutcome(finding=finding, outcome="would_repair")
        try:
            outcome, detail = self._repair(view, finding)
        except (RceError, StaleGeneration) as err:
            outcome, detail = "failed", str(err)
        if outcome != "recorded":
            self._record(finding, outcome, detail)
        return FindingOutcome(
            finding=finding, outcome="repaired" if outcome == "recorded" else outcome, detail=detail
        )

    def _record(self, finding: Finding, outcome: str, detail: str = "") -> None:
        self.ledger.append_event(
            finding.rollout,
            finding.wave,
            EventKind.DRIFT_DETECTED,
            sddc_id=finding.sddc_id,
            run_id=self.run_id,
            phase=finding.phase,
            message=finding.message + (f" ({detail})" if detail else ""),
            data=self._event_data(finding, outcome),
        )

    def _event_data(self, finding: Finding, outcome: str) -> dict[str, Any]:
        return {
            **finding.data,
            "drift": finding.kind.value,
            "repair": finding.repair.value,
            "safe": finding.safe,
            "outcome": outcome,
            "fingerprint": finding.fingerprint,
            "subject": finding.subject,
            "task_id": finding.task_id,
            "by": self.by,
            "by_run_id": self.run_id,
        }

    # ------------------------------------------------------------------ repairs

    def _repair(self, view: LedgerView | None, finding: Finding) -> tuple[Outcome | Literal["recorded"], str]:
        """Make one safe repair. Returns ("recorded", ...) when the repair wrote its own event."""
        assert view is not None, "safe repairs come from a judged record"
        repair = finding.repair
        if repair is RepairKind.ADOPT_STATE:
            return self._adopt_state(view, finding)
        if repair is RepairKind.RELEASE_CLAIM:
            assert view.claim is not None
            released = self.ledger.release_if_held(
                view.claim, message=finding.message, data={"drift": finding.kind.value, "by": self.by}
            )
            return ("repaired", "claim released") if released else ("skipped", "claim changed meanwhile")
        if repair is RepairKind.EXIT_MAINTENANCE:
            return self._exit_maintenance(view, str(finding.data["host_id"]))
        if repair is RepairKind.REATTACH_TASK:
            return self._reattach(view, finding)
        if repair is RepairKind.FORGET_TASK:
            assert finding.phase is not None and finding.generation is not None
            generation = self.ledger.bump_generation(
                view.rollout,
                view.wave,
                view.sddc_id,
                finding.phase,
                host_id=finding.slot,
                expected_generation=finding.generation,
                run_id=_owner(view, self.run_id),
                message=f"task {finding.task_id} unknown to the API: next start uses a new key",
            )
            return "repaired", f"generation {finding.generation} -> {generation}"
        if repair is RepairKind.ADOPT_SNAPSHOT:
            current = self.ledger.get(view.rollout, view.wave, view.sddc_id)
            if current is not None and current.snapshot_id:
                return "skipped", f"snapshot {current.snapshot_id} recorded meanwhile"
            snapshot_id = str(finding.data["snapshot_id"])
            self.ledger.set_snapshot(
                view.rollout, view.wave, view.sddc_id, _owner(view, self.run_id), snapshot_id
            )
            return "repaired", f"snapshot {snapshot_id} recorded"
        raise AssertionError(f"no repair for {repair}")  # pragma: no cover

    def _adopt_state(self, view: LedgerView, finding: Finding) -> tuple[Outcome | Literal["recorded"], str]:
        progress = view.progress
        assert progress is not None
        phase, status = Phase(finding.data["adopt_phase"]), Status(finding.data["adopt_status"])
        if self._in_flight:
            return "repaired", "in flight: the phase skips what is already done"
        done = phase is Phase.DONE
        changes: ProgressChanges = {"phase": phase, "status": status, "last_error": None}
        if done:
            changes["finished_at"] = self._clock()
        updated = self.ledger.update_if_version(
            view.rollout,
            view.wave,
            view.sddc_id,
            progress.run_id,
            progress.version,
            event=EventKind.DRIFT_DETECTED,
            message=finding.message,
            data=self._event_data(finding, "repaired"),
            **changes,
        )
        if updated is None:
            return "skipped", "the record changed meanwhile"
        claim = view.claim
        if done and claim is not None and (claim.rollout, claim.wave) == (view.rollout, view.wave):
            self.ledger.release_if_held(claim, message="adopted as done", data={"by": self.by})
        return "recorded", f"ledger moved to {phase.value} ({status.value})"

    def _reattach(self, view: LedgerView, finding: Finding) -> tuple[Outcome | Literal["recorded"], str]:
        assert finding.phase is not None and finding.generation is not None and finding.task_id
        status = str(finding.data["status"])
        try:
            self.ledger.record_operation_task(
                view.rollout,
                view.wave,
                view.sddc_id,
                finding.phase,
                host_id=finding.slot,
                generation=finding.generation,
                task_id=finding.task_id,
                key=None,
                status=status,
                run_id=_owner(view, self.run_id),
                kind="task_observed",
                message=f"task {finding.task_id} {status} (seen by reconciliation)",
            )
        except StaleGeneration as err:
            return "skipped", str(err)
        return "repaired", f"recorded {status}"

    def _exit_maintenance(self, view: LedgerView, host_id: str) -> tuple[Outcome | Literal["recorded"], str]:
        """Exit maintenance under the hosts phase's own slot and key scheme (host_exit)."""
        slot = f"{host_id}/exit"
        owner = _owner(view, self.run_id)
        ids = (view.rollout, view.wave, view.sddc_id)
        op = self.ledger.get_operation(*ids, Phase.UPGRADE_HOSTS, host_id=slot)
        generation = op.generation if op else 0
        if op is not None and op.task_id:
            earlier = self._task(op.task_id)
            if earlier is not None and not earlier.terminal:
                return "skipped", f"exit task {earlier.id} already running"
            generation = self.ledger.bump_generation(
                *ids,
                Phase.UPGRADE_HOSTS,
                host_id=slot,
                expected_generation=generation,
                run_id=owner,
                message="host back in maintenance: next exit uses a new key",
            )
        target = view.progress.target_version if view.progress else None
        key = idempotency_key(
            KeyParts(
                rollout=view.rollout,
                wave=view.wave,
                sddc_id=view.sddc_id,
                phase="host_exit",
                host_id=host_id,
                target_version=target,
                generation=generation,
            )
        )
        self._api_writes += 1
        result = self.hook.set_host_maintenance(view.sddc_id, host_id, False, key=key)
        task = self._wait(result.task)
        self.ledger.record_operation_task(
            *ids,
            Phase.UPGRADE_HOSTS,
            host_id=slot,
            generation=generation,
            task_id=task.id,
            key=key,
            status=task.status.value,
            run_id=owner,
            message=f"host_exit task {task.id} {task.status.value} (reconciliation)",
        )
        if task.terminal and task.status is not TaskStatus.SUCCEEDED:
            return "failed", f"exit task {task.id} ended {task.status.value}"
        return "repaired", f"exit task {task.id} {task.status.value}"

    def _wait(self, task: Task) -> Task:
        deadline = time.monotonic() + self.inline_wait_s
        delay = 0.1
        while not task.terminal and time.monotonic() + delay < deadline:
            self._sleep(delay)
            task = self.hook.get_task(task.id)
            delay = min(delay * 2, 1.0)
        return task


def _owner(view: LedgerView, fallback: str) -> str:
    """Writes keep the record's owning run id (so 'who watches it' stays right)."""
    if view.progress is not None:
        return view.progress.run_id
    return view.claim.run_id if view.claim is not None else fallback


def new_findings(reports: Iterable[SddcReport]) -> list[FindingOutcome]:
    return [o for r in reports for o in r.outcomes if o.new]
