"""The last task of a wave run: one readable summary, and the run's verdict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_bool


class WaveSummaryOperator(BaseOperator):
    """Summarise where every SDDC of the run stands; fail the run if any SDDC failed.

    Runs with trigger rule `all_done`, so it reports even when SDDCs failed. The
    run succeeds only when every SDDC of the cohort reached the target. A dry run
    ends SKIPPED: it upgraded nothing, so it must not emit the wave's promoted
    asset (its outlet), which would start the `after:` waves for real.
    """

    template_fields: Sequence[str] = ("preview",)
    ui_color = "#e7f7e7"

    def __init__(self, *, rollout: str, wave: str, dry_run: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rollout = rollout
        self.wave = wave
        self.preview = dry_run  # BaseOperator.dry_run is a method

    def execute(self, context: Context) -> dict[str, Any]:
        if as_bool(self.preview):
            raise AirflowSkipException("dry run: nothing was upgraded, the wave is not promoted")
        run_id = str(context["run_id"])
        cohort = context["ti"].xcom_pull(task_ids="resolve_cohort")
        if cohort is None:
            raise AirflowFailException("[COHORT_NOT_RESOLVED] resolve_cohort did not finish: see its log")
        members = set(cohort)
        ledger = get_ledger()
        rows = [
            row
            for row in ledger.list_progress(rollout=self.rollout, wave=self.wave)
            if row.sddc_id in members
        ]
        counts = Counter(row.status.value for row in rows)
        lines = [f"wave {self.wave} run {run_id}: {len(rows)} SDDC(s) " + _fmt(counts)]
        failed = []
        for row in sorted(rows, key=lambda r: r.sddc_id):
            error = f" [{row.last_error.code}] {row.last_error.message}" if row.last_error else ""
            lines.append(f"  {row.sddc_id:<24} {row.status.value:<12} {row.phase.value:<16}{error}")
            if row.status.value not in ("succeeded", "skipped"):
                failed.append(row.sddc_id)
        text = "\n".join(lines)
        self.log.info("\n%s", text)
        summary = {"total": len(rows), "by_status": dict(counts), "not_done": failed}
        ledger.append_event(
            rollout=self.rollout,
            wave=self.wave,
            run_id=run_id,
            kind="wave_summary",
            message=text,
            data=summary,
        )
        if failed:
            raise AirflowFailException(
                f"[WAVE_INCOMPLETE] {len(failed)} of {len(rows)} SDDC(s) did not reach the target: "
                + ", ".join(failed[:20])
            )
        return summary


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "(none)"
