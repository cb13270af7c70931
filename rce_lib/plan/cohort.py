"""Cohort selection: which SDDCs a wave run upgrades, and why every other candidate is left out.

Pure and deterministic: the same inventory, plan and claims give the same
cohort, so a re-run or a cleared task resolves to the same SDDCs. Every
SDDC the wave could have touched but does not is reported with a reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from rce_lib.api.models import SDDC_ID_PATTERN, SddcSummary, version_tuple
from rce_lib.errors import ParamsError
from rce_lib.plan.model import Wave

CANARY_LABEL = "canary"
#: The most SDDC ids a trigger may name (the params schema's maxItems; resolve_cohort checks it too).
MAX_COHORT_IDS = 1000
_SDDC_ID_RE = re.compile(SDDC_ID_PATTERN)


class ExclusionReason(StrEnum):
    """Why a candidate SDDC is not in the cohort; shown as-is in logs, ledger and metrics."""

    ALREADY_AT_TARGET = "ALREADY_AT_TARGET"
    CLAIMED_BY_OTHER_WAVE = "CLAIMED_BY_OTHER_WAVE"
    UPGRADE_PATH_NOT_SUPPORTED = "UPGRADE_PATH_NOT_SUPPORTED"
    NOT_READY = "NOT_READY"
    EXCLUDED_BY_SELECTOR = "EXCLUDED_BY_SELECTOR"
    NOT_IN_SELECTOR = "NOT_IN_SELECTOR"
    NOT_IN_INVENTORY = "NOT_IN_INVENTORY"
    OVER_SIZE = "OVER_SIZE"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CohortMember(_Frozen):
    """One SDDC the wave will upgrade; `canary` members go first and are judged first."""

    sddc_id: str
    region: str
    version: str
    canary: bool = False


class Exclusion(_Frozen):
    """One SDDC left out, with a reason code and a human detail."""

    sddc_id: str
    reason: ExclusionReason
    detail: str = ""


class Cohort(_Frozen):
    """The result of selection: members in run order (the canary slice, then the most hosts
    first), exclusions sorted by id."""

    wave: str
    target_version: str
    max_parallel: int = Field(ge=1)
    members: list[CohortMember]
    excluded: list[Exclusion]

    @property
    def ids(self) -> list[str]:
        """Member ids in run order (canary slice first)."""
        return [member.sddc_id for member in self.members]

    @property
    def canary_ids(self) -> list[str]:
        """Ids of the canary slice."""
        return [member.sddc_id for member in self.members if member.canary]

    @property
    def empty(self) -> bool:
        """True when nothing is left to upgrade (the caller decides whether that is an error)."""
        return not self.members

    def excluded_by(self, reason: ExclusionReason) -> list[str]:
        """Ids excluded for one reason."""
        return [item.sddc_id for item in self.excluded if item.reason is reason]

    def summary(self) -> str:
        """A few lines for the task log: size, canaries, the rest, and exclusion counts."""
        canaries = self.canary_ids
        rest = [member.sddc_id for member in self.members if not member.canary]
        lines = [
            f"wave {self.wave} -> {self.target_version}: {len(self.members)} SDDC(s), "
            f"{len(canaries)} canary, max_parallel {self.max_parallel}",
            f"  canary: {_short_list(canaries)}",
            f"  rest:   {_short_list(rest)}",
        ]
        counts = Counter(item.reason.value for item in self.excluded)
        if counts:
            lines.append(
                f"  excluded {len(self.excluded)}: "
                + ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
            )
        else:
            lines.append("  excluded: none")
        return "\n".join(lines)


def _short_list(ids: Sequence[str], limit: int = 12) -> str:
    if not ids:
        return "-"
    shown = ", ".join(ids[:limit])
    return shown if len(ids) <= limit else f"{shown}, ... (+{len(ids) - limit})"


def _is_canary(sddc: SddcSummary) -> bool:
    return sddc.labels.get(CANARY_LABEL, "").lower() == "true"


def _selection_order(sddc: SddcSummary) -> tuple[int, str]:
    """SDDCs labelled canary=true are taken (and run) first, then by id: stable across runs."""
    return (0 if _is_canary(sddc) else 1, sddc.id)


def _run_order(sddc: SddcSummary) -> int:
    """After the canary slice, the SDDCs with the most hosts run first (longest job first); the
    sort is stable, so equals keep the selection order (canary-labelled first, then by id).

    Hosts are upgraded one at a time, so an SDDC's host phase is the longest part of its upgrade
    and grows with its hosts; a big SDDC that reached it last would end the wave alone, long
    after every other SDDC. Which SDDCs are taken does not change, only their order."""
    return -sddc.host_count


def _check_override(sddc_ids: Sequence[str] | None) -> list[str] | None:
    if sddc_ids is None:
        return None
    bad = [sddc_id for sddc_id in sddc_ids if not isinstance(sddc_id, str) or not _SDDC_ID_RE.match(sddc_id)]
    if bad:
        raise ParamsError(f"sddc_ids: not SDDC ids ({SDDC_ID_PATTERN}): {bad!r}")
    return list(dict.fromkeys(sddc_ids))


def _check_max_parallel(wave: Wave, override: int | None) -> int:
    """A trigger may lower the wave's max_parallel, never raise it: the plan is the ceiling."""
    if override is None:
        return wave.max_parallel
    if isinstance(override, bool) or not isinstance(override, int) or override < 1:
        raise ParamsError(f"max_parallel must be a positive integer, got {override!r}")
    if override > wave.max_parallel:
        raise ParamsError(
            f"max_parallel {override} is above the plan's {wave.max_parallel} for wave {wave.name!r}; "
            "a trigger may only lower it"
        )
    return override


def _ineligible(
    sddc: SddcSummary,
    *,
    wave: Wave,
    target: str,
    upgrade_from: Collection[str],
    claimed: Collection[str] | Mapping[str, str],
    taken: Collection[str] | Mapping[str, str],
) -> Exclusion | None:
    """The first reason this matching SDDC cannot be upgraded by this wave now, or None."""
    if wave.selector.excludes(sddc.id):
        return Exclusion(
            sddc_id=sddc.id, reason=ExclusionReason.EXCLUDED_BY_SELECTOR, detail="in exclude_ids"
        )
    if version_tuple(sddc.version) >= version_tuple(target):
        detail = f"at {sddc.version}" + ("" if sddc.version == target else f", newer than {target}")
        return Exclusion(sddc_id=sddc.id, reason=ExclusionReason.ALREADY_AT_TARGET, detail=detail)
    if sddc.id in claimed:
        owner = claimed[sddc.id] if isinstance(claimed, Mapping) else None
        detail = f"claimed by wave {owner}" if owner else "claimed by another active wave"
        return Exclusion(sddc_id=sddc.id, reason=ExclusionReason.CLAIMED_BY_OTHER_WAVE, detail=detail)
    if sddc.id in taken:
        earlier = taken[sddc.id] if isinstance(taken, Mapping) else None
        detail = f"taken by earlier wave {earlier}" if earlier else "taken by an earlier wave"
        return Exclusion(sddc_id=sddc.id, reason=ExclusionReason.CLAIMED_BY_OTHER_WAVE, detail=detail)
    if sddc.version not in upgrade_from:
        return Exclusion(
            sddc_id=sddc.id,
            reason=ExclusionReason.UPGRADE_PATH_NOT_SUPPORTED,
            detail=f"{sddc.version} -> {target} is not a supported upgrade path",
        )
    if not sddc.ready:
        return Exclusion(
            sddc_id=sddc.id, reason=ExclusionReason.NOT_READY, detail=f"status {sddc.status.value}"
        )
    return None


def select_cohort(
    wave: Wave,
    inventory: Sequence[SddcSummary],
    *,
    upgrade_from: Collection[str],
    target_version: str | None = None,
    claimed: Collection[str] | Mapping[str, str] = frozenset(),
    taken: Collection[str] | Mapping[str, str] = frozenset(),
    sddc_ids: Sequence[str] | None = None,
    max_parallel: int | None = None,
) -> Cohort:
    """Pick the SDDCs this wave upgrades now.

    Candidates are the inventory SDDCs that match the wave's selector (and, when
    `sddc_ids` is given, are named in it: the override narrows the selector, never
    widens it, and replaces the wave size). Each is dropped with the first reason
    that applies; the eligible rest are ordered canary-labelled first then by id,
    and the first `size` (count, or N% of the eligible rounded up) are taken; the
    first `canary_size` of those are the canary slice. The others run largest first
    (most hosts; equals in selection order).

    `claimed` are ids held by other active waves, `taken` ids handled by earlier waves of the
    plan (for either, a mapping id -> wave names the wave in the detail).
    Raises ParamsError for a bad override (malformed ids, max_parallel above the plan).
    """
    target = target_version or wave.release
    parallel = _check_max_parallel(wave, max_parallel)
    override = _check_override(sddc_ids)
    by_id: dict[str, SddcSummary] = {}
    for sddc in inventory:
        by_id.setdefault(sddc.id, sddc)

    excluded: list[Exclusion] = []
    matching = [sddc for sddc in by_id.values() if wave.selector.matches(sddc)]
    matching_ids = {sddc.id for sddc in matching}
    for named in wave.selector.sddc_ids:
        if named not in by_id:
            excluded.append(
                Exclusion(sddc_id=named, reason=ExclusionReason.NOT_IN_INVENTORY, detail="named in selector")
            )
    if override is not None:
        for named in override:
            if named not in matching_ids:
                detail = "not in the wave's selector" if named in by_id else "not in the inventory"
                excluded.append(
                    Exclusion(sddc_id=named, reason=ExclusionReason.NOT_IN_SELECTOR, detail=detail)
                )
        wanted = set(override)
        matching = [sddc for sddc in matching if sddc.id in wanted]

    eligible: list[SddcSummary] = []
    for sddc in matching:
        reason = _ineligible(
            sddc, wave=wave, target=target, upgrade_from=upgrade_from, claimed=claimed, taken=taken
        )
        if reason is None:
            eligible.append(sddc)
        else:
            excluded.append(reason)

    eligible.sort(key=_selection_order)
    size = len(eligible) if override is not None else wave.resolve_size(len(eligible))
    chosen, over = eligible[:size], eligible[size:]
    excluded.extend(
        Exclusion(sddc_id=sddc.id, reason=ExclusionReason.OVER_SIZE, detail=f"wave size {wave.size} reached")
        for sddc in over
    )
    canary, rest = chosen[: wave.canary_size], sorted(chosen[wave.canary_size :], key=_run_order)
    members = [
        CohortMember(sddc_id=sddc.id, region=sddc.region, version=sddc.version, canary=canary_member)
        for canary_member, group in ((True, canary), (False, rest))
        for sddc in group
    ]
    excluded.sort(key=lambda item: (item.sddc_id, item.reason.value))
    return Cohort(
        wave=wave.name, target_version=target, max_parallel=parallel, members=members, excluded=excluded
    )


class ClaimLike(Protocol):
    """Who holds a claim (rce_lib.ledger.ClaimHolder, or anything shaped like it)."""

    @property
    def rollout(self) -> str: ...

    @property
    def wave(self) -> str: ...


def claims_of_others(active: Mapping[str, ClaimLike], *, rollout: str, wave: str) -> dict[str, str]:
    """Active claims held by any other (rollout, wave), as id -> "rollout/wave"; a wave's own
    earlier claims are not in the way (a new run of the same wave takes them over)."""
    return {
        sddc_id: f"{holder.rollout}/{holder.wave}"
        for sddc_id, holder in active.items()
        if (holder.rollout, holder.wave) != (rollout, wave)
    }


def cohort_for_run(
    wave: Wave,
    inventory: Sequence[SddcSummary],
    *,
    rollout: str,
    upgrade_from: Collection[str],
    target_version: str | None = None,
    active_claims: Mapping[str, ClaimLike] | None = None,
    taken: Collection[str] | Mapping[str, str] = frozenset(),
    sddc_ids: Sequence[str] | None = None,
    max_parallel: int | None = None,
) -> Cohort:
    """The cohort a run of `wave` takes: `select_cohort` with the ledger's active claims of other
    waves left out. resolve_cohort (the engine) and `rce plan` / the dry run (the preview) both
    call this, so a preview shows exactly what a run would take from the same inventory and claims.
    """
    return select_cohort(
        wave,
        inventory,
        upgrade_from=upgrade_from,
        target_version=target_version,
        claimed=claims_of_others(active_claims or {}, rollout=rollout, wave=wave.name),
        taken=taken,
        sddc_ids=sddc_ids,
        max_parallel=max_parallel,
    )
