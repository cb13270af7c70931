"""What a wave, or the whole plan, would take from the live inventory: the preview that
`rce plan` prints and a wave's dry run logs (no Airflow, no I/O).

Selection itself is `cohort_for_run` (the function resolve_cohort runs), so a preview never
disagrees with a run over the same inventory and claims. On top it adds what a person
deciding *when* to run needs: the waves' order (`after:` chains), the canary slice, every
exclusion with its reason, and when each member's maintenance window next opens.

A plan preview runs the waves in order and lets each take its cohort before the next is
resolved (reason CLAIMED_BY_OTHER_WAVE, "taken by an earlier wave"): that is what the plan
will do once every wave has run, whereas a wave triggered right now would still see those
SDDCs at their old release.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from rce_lib.api.models import SddcSummary
from rce_lib.plan.cohort import ClaimLike, Cohort, Exclusion, cohort_for_run
from rce_lib.plan.model import MANUAL, RolloutPlan, Wave
from rce_lib.plan.windows import describe_next, human_delta, next_window


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WindowInfo(_Frozen):
    """An SDDC's weekly maintenance window and its current-or-next opening (UTC)."""

    day_of_week: int
    start_hour_utc: int
    duration_hours: int
    opens_at: datetime
    closes_at: datetime
    open_now: bool
    text: str


class PreviewMember(_Frozen):
    """One SDDC the wave would take; canary members run first and are judged by the gate."""

    sddc_id: str
    region: str
    version: str
    canary: bool
    maintenance_window: WindowInfo | None = None


class WavePreview(_Frozen):
    """One wave: its place in the order, its cohort (canary slice marked) and its exclusions."""

    wave: str
    order: int
    schedule: str
    after: str | None = None
    target_version: str
    upgrade_from: list[str]
    size: int | str
    canary_size: int
    max_parallel: int
    members: list[PreviewMember]
    excluded: list[Exclusion]

    @property
    def ids(self) -> list[str]:
        return [m.sddc_id for m in self.members]

    @property
    def canary_ids(self) -> list[str]:
        return [m.sddc_id for m in self.members if m.canary]


class PlanPreview(_Frozen):
    """Every wave of the plan (or the ones asked for), in run order."""

    rollout: str
    release: str
    target_version: str | None = None
    generated_at: datetime
    plan_path: str | None = None
    api_url: str | None = None
    claims_source: str | None = None
    order: list[str]
    waves: list[WavePreview]


def run_order(plan: RolloutPlan) -> list[Wave]:
    """Waves in the order they run: each after the wave its `after:` names, else in plan order.
    (The plan model refuses unknown waves and cycles, so this always places every wave.)"""
    waves = plan.effective_waves()
    placed: list[Wave] = []
    names: set[str] = set()
    while len(placed) < len(waves):
        for wave in waves:
            if wave.name not in names and (wave.after is None or wave.after in names):
                placed.append(wave)
                names.add(wave.name)
                break
        else:  # pragma: no cover - the model rejects cycles and unknown after: targets
            raise ValueError("after: chain cannot be ordered")
    return placed


def window_info(sddc: SddcSummary, now: datetime) -> WindowInfo | None:
    window = sddc.maintenance_window
    if window is None:
        return None
    start, end = next_window(window, now)
    return WindowInfo(
        day_of_week=window.day_of_week,
        start_hour_utc=window.start_hour_utc,
        duration_hours=window.duration_hours,
        opens_at=start,
        closes_at=end,
        open_now=start <= now,
        text=describe_next(window, now),
    )


def _schedule_text(wave: Wave) -> str:
    return wave.schedule or MANUAL


def wave_preview(
    wave: Wave,
    cohort: Cohort,
    inventory: Sequence[SddcSummary],
    *,
    upgrade_from: Collection[str],
    now: datetime,
    order: int = 1,
) -> WavePreview:
    """Dress a cohort (from `cohort_for_run`) with the wave's settings and the members' windows."""
    by_id = {sddc.id: sddc for sddc in inventory}
    members = [
        PreviewMember(
            sddc_id=m.sddc_id,
            region=m.region,
            version=m.version,
            canary=m.canary,
            maintenance_window=window_info(by_id[m.sddc_id], now) if m.sddc_id in by_id else None,
        )
        for m in cohort.members
    ]
    return WavePreview(
        wave=wave.name,
        order=order,
        schedule=_schedule_text(wave),
        after=wave.after,
        target_version=cohort.target_version,
        upgrade_from=sorted(upgrade_from),
        size=wave.size,
        canary_size=wave.canary_size,
        max_parallel=cohort.max_parallel,
        members=members,
        excluded=cohort.excluded,
    )


def plan_preview(
    plan: RolloutPlan,
    inventory: Sequence[SddcSummary],
    *,
    upgrade_from: Mapping[str, Collection[str]],
    now: datetime,
    active_claims: Mapping[str, ClaimLike] | None = None,
    target_version: str | None = None,
    only_wave: str | None = None,
    plan_path: str | None = None,
    api_url: str | None = None,
    claims_source: str | None = None,
) -> PlanPreview:
    """Resolve every wave in run order, each after the earlier ones took their cohorts.

    `upgrade_from` maps each target release to the releases it can be reached from (the API's
    release record); `target_version` replaces every wave's release (the DAG's target_version
    param); `only_wave` keeps one wave in the result (the earlier ones are still resolved, so that
    it is shown as it will be when its turn comes).
    """
    if only_wave is not None:
        plan.wave(only_wave)  # PlanError naming the waves when there is no such wave
    taken: dict[str, str] = {}
    previews: list[WavePreview] = []
    ordered = run_order(plan)
    for position, wave in enumerate(ordered, start=1):
        target = target_version or wave.release
        sources = upgrade_from[target]
        cohort = cohort_for_run(
            wave,
            inventory,
            rollout=plan.rollout,
            upgrade_from=sources,
            target_version=target,
            active_claims=active_claims,
            taken=dict(taken),
        )
        taken.update(dict.fromkeys(cohort.ids, wave.name))
        if only_wave is None or wave.name == only_wave:
            previews.append(
                wave_preview(wave, cohort, inventory, upgrade_from=sources, now=now, order=position)
            )
    return PlanPreview(
        rollout=plan.rollout,
        release=plan.release,
        target_version=target_version,
        generated_at=now,
        plan_path=plan_path,
        api_url=api_url,
        claims_source=claims_source,
        order=[wave.name for wave in ordered],
        waves=previews,
    )


def targets(plan: RolloutPlan, target_version: str | None = None) -> list[str]:
    """The releases the plan's waves upgrade to (what `plan_preview` needs `upgrade_from` of)."""
    if target_version is not None:
        return [target_version]
    return sorted({wave.release for wave in plan.effective_waves()})


# ---------------------------------------------------------------- markdown (task log, run note)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def wave_markdown(preview: WavePreview, *, now: datetime, title: str | None = None) -> str:
    """The preview of one wave as markdown: cohort (canary first), exclusions, windows."""
    canary = preview.canary_ids
    counts = Counter(item.reason.value for item in preview.excluded)
    after = f", after `{preview.after}`" if preview.after else ""
    lines = [
        f"### {title or f'Wave `{preview.wave}`'}",
        "",
        f"**{len(preview.members)} SDDC(s)** to **{preview.target_version}** "
        f"({len(canary)} canary, max_parallel {preview.max_parallel}, size {preview.size}, "
        f"schedule `{preview.schedule}`{after}); upgrade path from {', '.join(preview.upgrade_from) or '-'}.",
        "",
    ]
    if preview.members:
        lines += ["| # | SDDC | slice | region | version | maintenance window |", "|---|---|---|---|---|---|"]
        for index, member in enumerate(preview.members, start=1):
            window = member.maintenance_window.text if member.maintenance_window else "none (any time)"
            slice_ = "canary" if member.canary else "bulk"
            lines.append(
                f"| {index} | {member.sddc_id} | {slice_} | {member.region} | {member.version} "
                f"| {_md_cell(window)} |"
            )
    else:
        lines.append("_No SDDC would be taken._")
    lines.append("")
    if preview.excluded:
        summary = ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
        lines += [f"**Excluded {len(preview.excluded)}** ({summary}):", ""]
        lines += ["| SDDC | reason | detail |", "|---|---|---|"]
        lines += [f"| {e.sddc_id} | {e.reason.value} | {_md_cell(e.detail)} |" for e in preview.excluded]
    else:
        lines.append("**Excluded:** none.")
    lines += ["", f"_Computed {now:%Y-%m-%d %H:%M:%S} UTC; windows in UTC._"]
    return "\n".join(lines)


def opens_in(window: WindowInfo | None, now: datetime) -> str:
    """Short form for tables: `open (3h 10m left)`, `in 2d 4h`, or `-` without a window."""
    if window is None:
        return "-"
    if window.open_now:
        return f"open ({human_delta(window.closes_at - now)} left)"
    return f"in {human_delta(window.opens_at - now)}"
