"""Resolve a wave's cohort from the live inventory and claim its SDDCs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_bool, as_int, as_str_list
from rce_lib.api.models import VERSION_RE
from rce_lib.api.tracing import trace_id_for
from rce_lib.errors import ApiError, RceError
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.plan.cohort import Cohort, Exclusion, ExclusionReason, select_cohort
from rce_lib.plan.loader import load_plan


class ResolveCohortOperator(BaseOperator):
    """Pick the SDDCs this run upgrades and claim them in the ledger.

    Returns the list of SDDC ids that the per-SDDC task group is mapped over.
    An SDDC claimed by another active wave is left out; a new run of the same
    wave takes over its own earlier claims, so a re-run resumes the same SDDCs.
    With `dry_run` nothing is claimed and the list is empty: the log shows what
    the run would take.
    """

    template_fields: Sequence[str] = ("target_version", "preview", "sddc_ids", "max_parallel")
    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        rollout: str,
        wave: str,
        target_version: str,
        dry_run: bool | str = False,
        sddc_ids: list[str] | str | None = None,
        max_parallel: int | str | None = None,
        plan_path: str | None = None,
        sddc_api_conn_id: str = "sddc_api",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rollout = rollout
        self.wave = wave
        self.target_version = target_version
        self.preview = dry_run  # BaseOperator.dry_run is a method
        self.sddc_ids = sddc_ids
        self.max_parallel = max_parallel
        self.plan_path = plan_path
        self.sddc_api_conn_id = sddc_api_conn_id

    def execute(self, context: Context) -> list[str]:
        from rce_lib.hooks.sddc_api import SddcApiHook

        run_id = str(context["run_id"])
        if not VERSION_RE.fullmatch(str(self.target_version)):
            raise AirflowFailException(
                f"[INVALID_PARAMS] target_version {self.target_version!r} is not X.Y.Z"
            )
        plan = load_plan(self.plan_path)
        wave = plan.wave(self.wave)
        hook = SddcApiHook(
            sddc_api_conn_id=self.sddc_api_conn_id, trace_id=trace_id_for(self.rollout, self.wave, run_id)
        )
        ledger = get_ledger()
        try:
            release = hook.get_release(self.target_version)
            inventory = list(hook.list_sddcs())
        except ApiError as err:
            if err.status == 404:
                raise AirflowFailException(
                    f"[INVALID_PARAMS] release {self.target_version} is unknown to the SDDC API"
                ) from err
            if not err.retryable:
                raise AirflowFailException(str(err)) from err
            raise
        claims = {
            sddc_id: f"{holder.rollout}/{holder.wave}"
            for sddc_id, holder in ledger.active_claims().items()
            if (holder.rollout, holder.wave) != (self.rollout, self.wave)
        }
        try:
            only, limit = as_str_list(self.sddc_ids), as_int(self.max_parallel)
        except (ValueError, SyntaxError) as err:
            raise AirflowFailException(f"[INVALID_PARAMS] sddc_ids or max_parallel: {err}") from err
        try:
            cohort = select_cohort(
                wave,
                inventory,
                upgrade_from=release.upgrade_from,
                target_version=self.target_version,
                claimed=claims,
                sddc_ids=only,
                max_parallel=limit,
            )
        except RceError as err:
            raise AirflowFailException(str(err)) from err
        self.log.info("cohort:\n%s", cohort.summary())
        for item in cohort.excluded:
            self.log.info("excluded %s: %s %s", item.sddc_id, item.reason.value, item.detail)
        if as_bool(self.preview):
            self.log.info("dry run: nothing claimed, no SDDC is touched")
            ledger.append_event(
                rollout=self.rollout,
                wave=self.wave,
                run_id=run_id,
                kind="cohort_preview",
                message=cohort.summary(),
                data=cohort.model_dump(mode="json"),
            )
            return []
        members = self._claim(ledger, cohort, run_id)
        by_id = {sddc.id: sddc for sddc in inventory}
        for sddc_id in members:
            _enroll(
                ledger, self.rollout, self.wave, sddc_id, run_id, self.target_version, by_id[sddc_id].version
            )
        ledger.append_event(
            rollout=self.rollout,
            wave=self.wave,
            run_id=run_id,
            kind="cohort_resolved",
            message=cohort.summary(),
            data={
                "members": members,
                "canary": cohort.canary_ids,
                "target_version": self.target_version,
                "excluded": [e.model_dump(mode="json") for e in cohort.excluded],
            },
        )
        return members

    def _claim(self, ledger: Ledger, cohort: Cohort, run_id: str) -> list[str]:
        members: list[str] = []
        for sddc_id in cohort.ids:
            result = ledger.claim(sddc_id, rollout=self.rollout, wave=self.wave, run_id=run_id)
            if result.granted:
                members.append(sddc_id)
            else:
                refused = Exclusion(
                    sddc_id=sddc_id,
                    reason=ExclusionReason.CLAIMED_BY_OTHER_WAVE,
                    detail=f"claimed by {result.holder.rollout}/{result.holder.wave}",
                )
                self.log.warning("excluded %s: %s %s", sddc_id, refused.reason.value, refused.detail)
        return members


def _enroll(
    ledger: Ledger, rollout: str, wave: str, sddc_id: str, run_id: str, target: str, source: str
) -> None:
    """Give the SDDC a progress record in this run, keeping what an earlier run learnt
    (its source release and snapshot), so that a new run resumes instead of restarting."""
    current = ledger.get(rollout, wave, sddc_id)
    changes: dict[str, Any] = {"target_version": target}
    if current is None or current.source_version is None:
        changes["source_version"] = source
    if current is None or current.status in (Status.SUCCEEDED, Status.ROLLED_BACK, Status.SKIPPED):
        changes.update(phase=Phase.PRECHECK, status=Status.PENDING, started_at=None, finished_at=None)
    ledger.upsert_progress(
        rollout, wave, sddc_id, run_id, event="enrolled", message=f"enrolled for {target}", **changes
    )
