"""The last task of a wave run: one readable summary, and the run's verdict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_bool
from rce_lib.errors import Reason
from rce_lib.gate import record
from rce_lib.gate.stats import Verdict
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Progress, Status
from rce_lib.operators.approval import REJECTED_EVENT
from rce_lib.pacing.store import Pacer
from rce_lib.sensors.canary_gate import HELD_EVENT
from rce_lib.telemetry import scope, tracing

FAILED = (Status.FAILED, Status.ROLLED_BACK)


class WaveSummaryOperator(BaseOperator):
    """Summarise where every SDDC of the run stands, and decide whether the wave is promoted.

    Runs with trigger rule `all_done`, so it reports even when SDDCs failed. The
    run succeeds (and its outlet, the wave's promoted asset, is emitted) only
    when the canary gate passed, nothing was held by the kill switch, every SDDC
    of the cohort ended, and no more than `max_fail_percentage` of them failed.
    A dry run ends SKIPPED: it upgraded nothing, so it must not start the
    `after:` waves for real.
    """

    template_fields: Sequence[str] = ("preview",)
    ui_color = "#e7f7e7"

    def __init__(
        self,
        *,
        rollout: str,
        wave: str,
        max_fail_percentage: float = 0.0,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rollout = rollout
        self.wave = wave
        self.max_fail_percentage = max_fail_percentage
        self.preview = dry_run  # BaseOperator.dry_run is a method

    def execute(self, context: Context) -> dict[str, Any]:
        with scope.wave_scope(rollout=self.rollout, wave=self.wave, task="wave_summary", context=context):
            return self.summarise(context)

    def summarise(self, context: Context) -> dict[str, Any]:
        if as_bool(self.preview):
            raise AirflowSkipException("dry run: nothing was upgraded, the wave is not promoted")
        run_id = str(context["run_id"])
        ti = context["ti"]
        cohort = ti.xcom_pull(task_ids="resolve_cohort")
        if cohort is None:
            raise AirflowFailException("[COHORT_NOT_RESOLVED] resolve_cohort did not finish: see its log")
        canary = set(ti.xcom_pull(task_ids="resolve_cohort", key="canary") or [])
        members = set(cohort)
        ledger = get_ledger()
        released = Pacer(ledger).release_run(run_id)
        if released:  # tasks no phase of this run will see end any more (rce_lib.pacing)
            self.log.info("gave back %d pacing slot(s) this run still held", released)
        rows = [
            row
            for row in ledger.list_progress(rollout=self.rollout, wave=self.wave)
            if row.sddc_id in members
        ]
        verdict, reason = self.verdict(ledger, run_id, rows, canary)
        counts = Counter(row.status.value for row in rows)
        lines = [f"wave {self.wave} run {run_id}: {len(rows)} SDDC(s) " + _fmt(counts), f"verdict: {verdict}"]
        for row in sorted(rows, key=lambda r: (r.sddc_id not in canary, r.sddc_id)):
            error = f" [{row.last_error.code}] {row.last_error.message}" if row.last_error else ""
            slice_ = "canary" if row.sddc_id in canary else "bulk"
            lines.append(
                f"  {row.sddc_id:<24} {slice_:<7} {row.status.value:<12} {row.phase.value:<16}{error}"
            )
        text = "\n".join(lines)
        self.log.info("\n%s", text)
        not_done = sorted(r.sddc_id for r in rows if not _upgraded(r))
        summary = {
            "total": len(rows),
            "by_status": dict(counts),
            "not_done": not_done,
            "verdict": verdict,
            "reason": reason,
        }
        ledger.append_event(
            rollout=self.rollout,
            wave=self.wave,
            run_id=run_id,
            kind="wave_summary",
            message=text,
            data=summary,
        )
        self.emit_wave_span(context, rows, summary)
        if reason is not None:
            raise AirflowFailException(f"[{reason}] {verdict}")
        return summary

    def emit_wave_span(self, context: Context, rows: list[Progress], summary: dict[str, Any]) -> None:
        """The wave span (root of the run's wave trace; every SDDC span links to it): from the
        run's start (or its first SDDC's) to this summary, with the verdict."""
        if not tracing.enabled():
            return
        run_id = str(context["run_id"])
        dag_run = context.get("dag_run")
        started = getattr(dag_run, "start_date", None) or min(
            (r.started_at for r in rows if r.started_at is not None), default=None
        )
        reason = summary["reason"]
        tracing.emit_span(
            "rce.wave",
            tracing.wave_ref(self.rollout, self.wave, run_id),
            start=started,
            end=datetime.now(UTC),
            attributes={
                "rce.rollout": self.rollout,
                "rce.wave": self.wave,
                "rce.run_id": run_id,
                "rce.sddcs": summary["total"],
                "rce.not_done": len(summary["not_done"]),
                "rce.outcome": "promoted" if reason is None else "failed",
                "rce.reason": reason,
            },
            error=reason,
        )

    def verdict(
        self, ledger: Ledger, run_id: str, rows: list[Progress], canary: set[str]
    ) -> tuple[str, str | None]:
        """(a sentence, the reason code that fails the run or None when the wave is promoted)."""
        decision = record.final(ledger, self.rollout, self.wave, run_id)
        if record.stops_the_wave(decision):
            assert decision is not None
            code = (
                Reason.CANARY_GATE_FAILED if decision.decision is Verdict.FAIL else Reason.GATE_INCONCLUSIVE
            )
            return "canary gate stopped the wave: " + "; ".join(decision.reasons), code
        if canary and decision is None:
            if ledger.events(rollout=self.rollout, wave=self.wave, run_id=run_id, kinds=[HELD_EVENT]):
                return "the kill switch held the canary gate: unset it, clear canary_gate", Reason.KILL_SWITCH
            return (
                "the canary gate did not decide: clear canary_gate to judge again",
                Reason.CANARY_GATE_FAILED,
            )
        if ledger.events(rollout=self.rollout, wave=self.wave, run_id=run_id, kinds=[REJECTED_EVENT]):
            return "a human rejected the promotion past the canary slice", Reason.PROMOTION_REJECTED
        halted = [r.sddc_id for r in rows if r.last_error and r.last_error.code == Reason.KILL_SWITCH]
        if halted:
            return (
                f"{len(halted)} SDDC(s) held by the kill switch: unset it and clear their failed tasks",
                Reason.KILL_SWITCH,
            )
        failed = [r for r in rows if r.status in FAILED and r.finished_at is not None]
        percent = 100.0 * len(failed) / len(rows) if rows else 0.0
        budget = f"{len(failed)} of {len(rows)} failed ({percent:.0f}%, budget {self.max_fail_percentage:g}%)"
        if percent > self.max_fail_percentage:
            return f"error budget exhausted: {budget}", Reason.ERROR_BUDGET_EXHAUSTED
        unfinished = [r.sddc_id for r in rows if not _upgraded(r) and r not in failed]
        if unfinished:
            return (
                f"{len(unfinished)} SDDC(s) did not finish: " + ", ".join(unfinished[:20]),
                "WAVE_INCOMPLETE",
            )
        return f"promoted: {budget}", None


def _upgraded(row: Progress) -> bool:
    return row.status is Status.SUCCEEDED or (row.status is Status.SKIPPED and row.last_error is None)


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "(none)"
