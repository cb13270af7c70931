"""The fleet sweep's operators: page the ledger into batches, reconcile each batch
(mapped, pool-limited), summarise what was repaired and what needs a human.

The work itself is in rce_lib.reconcile (no Airflow); these operators only add
what needs Airflow: the ledger connection, rendered params, and asking Airflow
whether the run owning a ledger record or a claim still runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_bool, as_str_list
from rce_lib.api.services import POOL_FOR_SERVICE, Service
from rce_lib.api.tracing import trace_id_for
from rce_lib.metrics.downstream import ledger_recorder
from rce_lib.plan.model import DAG_ID_PREFIX
from rce_lib.reconcile.apply import Reconciler, SddcReport
from rce_lib.reconcile.drift import RunState
from rce_lib.telemetry import log_context, scope

SUMMARY_ROLLOUT = scope.SWEEP_ROLLOUT
SUMMARY_WAVE = scope.SWEEP_WAVE
"""Scope of the sweep's own ledger events (`reconcile_summary`): it belongs to no wave."""
RUNNING_STATES = ["queued", "running"]


class ListReconcileBatchesOperator(BaseOperator):
    """Page the ledger's active and recent records into batches of SDDC ids.

    Active: a progress record not finished. Recent: touched within `recent_s`. Any
    SDDC with a claim is included too (a claim left behind is itself drift). Reads
    key columns only, so a record that no longer parses is still listed and judged.
    """

    ui_color = "#f3f3f3"

    def __init__(self, *, batch_size: int = 25, recent_s: float = 7 * 86400.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.recent_s = recent_s

    def execute(self, context: Context) -> list[list[str]]:
        with scope.sweep_scope(task="list_batches", context=context):
            return self.list_batches()

    def list_batches(self) -> list[list[str]]:
        since = datetime.now(UTC) - timedelta(seconds=self.recent_s)
        ids = get_ledger().sddc_ids_to_reconcile(updated_since=since)
        batches = [ids[i : i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
        self.log.info(
            "%d SDDC(s) to reconcile in %d batch(es) of at most %d", len(ids), len(batches), self.batch_size
        )
        return batches


class ReconcileBatchOperator(BaseOperator):
    """Reconcile one batch of SDDCs: safe repairs made, the rest flagged (one mapped instance).

    Runs in the `rce_vcenter` pool: its calls are management-plane reads (SDDC, tasks,
    releases), and its only mutation (a host leaving maintenance) is one short task.
    An SDDC that cannot be judged (API down, an unexpected error) is reported and the
    batch goes on with the next one.
    """

    template_fields: Sequence[str] = ("sddc_ids", "preview")
    ui_color = "#eef6ee"

    def __init__(
        self,
        *,
        sddc_ids: list[str] | str,
        dry_run: bool | str = False,
        sddc_api_conn_id: str = "sddc_api",
        lease_s: float = 6 * 3600.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", POOL_FOR_SERVICE[Service.VCENTER])
        super().__init__(**kwargs)
        self.sddc_ids = sddc_ids
        self.preview = dry_run  # BaseOperator.dry_run is a method
        self.sddc_api_conn_id = sddc_api_conn_id
        self.lease_s = lease_s

    def execute(self, context: Context) -> list[dict[str, Any]]:
        with scope.sweep_scope(task="reconcile_batch", context=context):
            return self.reconcile(context)

    def reconcile(self, context: Context) -> list[dict[str, Any]]:
        from rce_lib.hooks.sddc_api import SddcApiHook

        run_id = str(context["run_id"])
        ids = as_str_list(self.sddc_ids) or []
        ledger = get_ledger()
        hook = SddcApiHook(
            sddc_api_conn_id=self.sddc_api_conn_id,
            trace_id=trace_id_for("reconcile", run_id),
            on_request=ledger_recorder(ledger.url).observe,
        )
        reconciler = Reconciler(
            ledger, hook, by="sweep", run_id=run_id, dry_run=as_bool(self.preview), lease_s=self.lease_s
        )
        states = RunStates(context)
        reports: list[dict[str, Any]] = []
        for sddc_id in ids:
            log_context.rebind(sddc_id=sddc_id)
            try:
                report = reconciler.sweep_sddc(sddc_id, states)
            except Exception as err:  # one SDDC must never stop the sweep
                self.log.exception("%s: could not be reconciled", sddc_id)
                report = SddcReport(sddc_id=sddc_id, error=f"{type(err).__name__}: {err}")
            reports.append(report.model_dump(mode="json"))
        hook.close()
        return reports


class RunStates:
    """Asks Airflow whether a wave run still runs; caches per (wave, run)."""

    def __init__(self, context: Context) -> None:
        self._ti = context["ti"]
        self._cache: dict[tuple[str, str], RunState] = {}

    def __call__(self, wave: str, run_id: str) -> RunState:
        key = (wave, run_id)
        if key not in self._cache:
            self._cache[key] = self._ask(f"{DAG_ID_PREFIX}{wave}", run_id)
        return self._cache[key]

    def _ask(self, dag_id: str, run_id: str) -> RunState:
        try:
            if self._ti.get_dr_count(dag_id=dag_id, run_ids=[run_id], states=RUNNING_STATES) > 0:
                return RunState.RUNNING
            return RunState.ENDED  # finished, or no such run any more: nobody watches it
        except Exception:  # the execution API could not answer: judged by the lease instead
            return RunState.UNKNOWN


class ReconcileSummaryOperator(BaseOperator):
    """One readable summary of the sweep; fails the run if a batch's results are missing.

    Findings that need a human do not fail the run: they are listed here (and in the
    ledger, event `drift_detected` with outcome `flagged`) until they are resolved.
    """

    template_fields: Sequence[str] = ("preview",)
    ui_color = "#e7f7e7"

    def __init__(self, *, dry_run: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.preview = dry_run

    def execute(self, context: Context) -> dict[str, Any]:
        with scope.sweep_scope(task="summary", context=context):
            return self.summarise(context)

    def summarise(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        batches = ti.xcom_pull(task_ids="list_batches") or []
        # explicit map indexes: a list even for one batch (one index alone comes back unwrapped)
        pulled = ti.xcom_pull(task_ids="reconcile_batch", map_indexes=list(range(len(batches))))
        results = [r for r in (pulled if batches else []) if r is not None]
        reports = [SddcReport.model_validate(item) for batch in results for item in batch]
        summary, text = summarise(reports, dry_run=as_bool(self.preview))
        self.log.info("\n%s", text)
        get_ledger().append_event(
            SUMMARY_ROLLOUT,
            SUMMARY_WAVE,
            "reconcile_summary",
            run_id=str(context["run_id"]),
            message=text,
            data=summary,
        )
        if len(results) < len(batches):
            raise AirflowFailException(
                f"[API_ERROR] {len(batches) - len(results)} of {len(batches)} batch(es) did not finish: "
                "see their logs"
            )
        return summary


def summarise(reports: list[SddcReport], *, dry_run: bool) -> tuple[dict[str, Any], str]:
    """Counts per drift kind and outcome, what needs a human, and SDDCs not judged."""
    by_kind: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter()
    human: list[dict[str, str]] = []
    repaired: list[dict[str, str]] = []
    for report in reports:
        for item in report.outcomes:
            finding = item.finding
            by_kind[finding.kind.value] += 1
            by_outcome[item.outcome] += 1
            row = {"sddc_id": finding.sddc_id, "drift": finding.kind.value, "message": finding.message}
            if finding.safe:
                repaired.append({**row, "outcome": item.outcome, "detail": item.detail})
            else:
                human.append({**row, "outcome": item.outcome})
    errors = [{"sddc_id": r.sddc_id, "error": r.error} for r in reports if r.error]
    new = sum(1 for r in reports for o in r.outcomes if o.new)
    summary: dict[str, Any] = {
        "dry_run": dry_run,
        "sddcs": len(reports),
        "new": new,
        "by_kind": dict(by_kind),
        "by_outcome": dict(by_outcome),
        "repairs": repaired,
        "needs_human": human,
        "resolved": sum(len(r.resolved) for r in reports),
        "errors": errors,
    }
    head = "dry run: nothing changed. " if dry_run else ""
    lines = [
        f"{head}reconciled {len(reports)} SDDC(s): {new} new finding(s), "
        f"{len(human)} need a human, {len(errors)} not judged"
    ]
    lines += [f"  repair {r['sddc_id']:<20} {r['outcome']:<12} {r['message']}" for r in repaired]
    lines += [f"  HUMAN  {h['sddc_id']:<20} {h['outcome']:<12} {h['message']}" for h in human]
    lines += [f"  ERROR  {e['sddc_id']:<20} {e['error']}" for e in errors]
    return summary, "\n".join(lines)
