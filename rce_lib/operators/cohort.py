"""Resolve a wave's cohort from the live inventory and claim its SDDCs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_bool, as_int, as_str_list
from rce_lib.api.models import VERSION_RE, SddcSummary
from rce_lib.api.tracing import trace_id_for
from rce_lib.errors import ApiError, RceError
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.metrics.downstream import ledger_recorder
from rce_lib.plan.cohort import MAX_COHORT_IDS, Cohort, Exclusion, ExclusionReason, cohort_for_run
from rce_lib.plan.loader import load_plan
from rce_lib.plan.model import Wave
from rce_lib.plan.preview import wave_markdown, wave_preview
from rce_lib.telemetry import scope


class ResolveCohortOperator(BaseOperator):
    """Pick the SDDCs this run upgrades and claim them in the ledger.

    Returns the list of SDDC ids that the per-SDDC task group is mapped over.
    An SDDC claimed by another active wave is left out; a new run of the same
    wave takes over its own earlier claims, so a re-run resumes the same SDDCs.
    With `dry_run` nothing is claimed and the list is empty: the task log shows the
    preview (the same as `rce plan --wave`) as markdown, and the XComs `preview` (JSON)
    and `preview_markdown` hold it.
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
        with scope.wave_scope(rollout=self.rollout, wave=self.wave, task="resolve_cohort", context=context):
            return self.resolve(context)

    def resolve(self, context: Context) -> list[str]:
        from rce_lib.hooks.sddc_api import SddcApiHook

        run_id = str(context["run_id"])
        if not VERSION_RE.fullmatch(str(self.target_version)):
            raise AirflowFailException(
                f"[INVALID_PARAMS] target_version {self.target_version!r} is not X.Y.Z"
            )
        only, limit = self._overrides()
        plan = load_plan(self.plan_path)
        wave = plan.wave(self.wave)
        ledger = get_ledger()
        hook = SddcApiHook(
            sddc_api_conn_id=self.sddc_api_conn_id,
            trace_id=trace_id_for(self.rollout, self.wave, run_id),
            on_request=ledger_recorder(ledger.url).observe,
        )
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
        try:
            cohort = cohort_for_run(
                wave,
                inventory,
                rollout=self.rollout,
                upgrade_from=release.upgrade_from,
                target_version=self.target_version,
                active_claims=ledger.active_claims(),
                sddc_ids=only,
                max_parallel=limit,
            )
        except RceError as err:
            raise AirflowFailException(str(err)) from err
        self.log.info("cohort:\n%s", cohort.summary())
        for item in cohort.excluded:
            self.log.info("excluded %s: %s %s", item.sddc_id, item.reason.value, item.detail)
        if as_bool(self.preview):
            self._preview(context, ledger, wave, cohort, inventory, release.upgrade_from)
            return []
        if not cohort.ids:
            self._nothing_to_do(cohort, only is not None, release.upgrade_from)
        members = self._claim(ledger, cohort, run_id)
        canary = [i for i in cohort.canary_ids if i in members]
        if 0 < len(members) < wave.canary_size:
            self.log.warning(
                "canary_size %d is larger than this run's cohort (%d): the whole cohort is the canary slice",
                wave.canary_size,
                len(members),
            )
        self._push_slices(context, canary, [i for i in members if i not in canary])
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
                "max_parallel": cohort.max_parallel,
                "excluded": [e.model_dump(mode="json") for e in cohort.excluded],
            },
        )
        return members

    def _overrides(self) -> tuple[list[str] | None, int | None]:
        """The rendered `sddc_ids` and `max_parallel`, checked before any request."""
        try:
            only, limit = as_str_list(self.sddc_ids), as_int(self.max_parallel)
        except (ValueError, SyntaxError) as err:
            raise AirflowFailException(f"[INVALID_PARAMS] sddc_ids or max_parallel: {err}") from err
        if only is not None and len(only) > MAX_COHORT_IDS:
            raise AirflowFailException(
                f"[INVALID_PARAMS] sddc_ids names {len(only)} SDDCs; at most {MAX_COHORT_IDS} per run"
            )
        return only, limit

    def _nothing_to_do(self, cohort: Cohort, named: bool, upgrade_from: list[str]) -> None:
        """An empty cohort. A mistake of the trigger fails before anything is claimed: named ids
        none of which is in the wave's selector, or a target no SDDC of the wave can upgrade to.
        Otherwise (typically a re-run of a finished wave) the run goes on with nothing to do."""
        reasons = {e.reason for e in cohort.excluded}
        if named and reasons <= {ExclusionReason.NOT_IN_SELECTOR, ExclusionReason.NOT_IN_INVENTORY}:
            ids = ", ".join(e.sddc_id for e in cohort.excluded if e.reason is ExclusionReason.NOT_IN_SELECTOR)
            raise AirflowFailException(
                f"[INVALID_PARAMS] sddc_ids: none is an SDDC of wave {self.wave!r} "
                f"(not in its selector or the inventory: {ids})"
            )
        if reasons == {ExclusionReason.UPGRADE_PATH_NOT_SUPPORTED}:
            sources = sorted({e.detail.split(" ->")[0] for e in cohort.excluded})
            raise AirflowFailException(
                f"[UPGRADE_PATH_NOT_SUPPORTED] no SDDC of wave {self.wave!r} can upgrade to "
                f"{self.target_version}: it upgrades from {', '.join(upgrade_from) or 'nothing'}, "
                f"the wave's SDDCs are at {', '.join(sources)}"
            )
        self.log.warning("[EMPTY_COHORT] nothing to upgrade in this run:\n%s", cohort.summary())

    def _preview(
        self,
        context: Context,
        ledger: Ledger,
        wave: Wave,
        cohort: Cohort,
        inventory: list[SddcSummary],
        upgrade_from: list[str],
    ) -> None:
        """A dry run: the same preview as `rce plan --wave`, as markdown in this task's log, as the
        XCom `preview` (the model, JSON) and as the ledger event `cohort_preview`; nothing claimed,
        nothing enrolled, no call but the two reads above."""
        now = datetime.now(UTC)
        preview = wave_preview(wave, cohort, inventory, upgrade_from=upgrade_from, now=now)
        markdown = wave_markdown(preview, now=now, title=f"Dry run of wave `{self.wave}`: nothing changed")
        self.log.info("dry run preview (markdown):\n%s", markdown)
        self.log.info("dry run: nothing claimed, no SDDC is touched")
        self._push_slices(context, [], [])
        context["ti"].xcom_push(key="preview", value=preview.model_dump(mode="json"))
        context["ti"].xcom_push(key="preview_markdown", value=markdown)
        ledger.append_event(
            rollout=self.rollout,
            wave=self.wave,
            run_id=str(context["run_id"]),
            kind="cohort_preview",
            message=markdown,
            data=preview.model_dump(mode="json"),
        )

    def _push_slices(self, context: Context, canary: list[str], bulk: list[str]) -> None:
        """The canary slice and the rest, each mapped over by its own task group."""
        self.log.info("canary slice: %s; then %d more", ", ".join(canary) or "(none)", len(bulk))
        context["ti"].xcom_push(key="canary", value=canary)
        context["ti"].xcom_push(key="bulk", value=bulk)

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


class CohortSliceOperator(BaseOperator):
    """Hand one slice of the cohort (`canary` or `bulk`) to the task group mapped over it.

    Airflow maps only over a task's return value, so each slice that
    resolve_cohort pushed under its own key is returned again here.
    """

    ui_color = "#fff4d6"

    def __init__(self, *, slice_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if slice_name not in ("canary", "bulk"):
            raise ValueError(f"slice_name must be canary or bulk, got {slice_name!r}")
        self.slice_name = slice_name

    def execute(self, context: Context) -> list[str]:
        ids = context["ti"].xcom_pull(task_ids="resolve_cohort", key=self.slice_name)
        if ids is None:
            raise AirflowFailException(
                f"[COHORT_NOT_RESOLVED] resolve_cohort pushed no {self.slice_name} slice"
            )
        return [str(i) for i in ids]
