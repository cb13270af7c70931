"""The preview (`rce plan`, dry run): the engine's cohort per wave in run order, with windows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rce_lib.api.models import SddcSummary
from rce_lib.ledger.models import ClaimHolder
from rce_lib.plan.cohort import ExclusionReason, claims_of_others, cohort_for_run, select_cohort
from rce_lib.plan.model import parse_plan
from rce_lib.plan.preview import plan_preview, run_order, wave_markdown

R = ExclusionReason
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def sddc(
    sddc_id: str, version: str = "1.25.0", window: dict[str, int] | None = None, **labels: str
) -> SddcSummary:
    return SddcSummary.model_validate(
        {
            "id": sddc_id,
            "org_id": "org-1",
            "region": "us-east-1",
            "version": version,
            "status": "READY",
            "host_count": 3,
            "labels": labels,
            "maintenance_window": window,
        }
    )


INVENTORY = [
    sddc("sddc-0001", window={"day_of_week": 0, "start_hour_utc": 8, "duration_hours": 4}),
    sddc("sddc-0002", canary="true"),
    sddc("sddc-0003", window={"day_of_week": 6, "start_hour_utc": 22, "duration_hours": 8}),
    sddc("sddc-0004"),
    sddc("sddc-0005", version="1.24.0"),
    sddc("sddc-0006", version="1.26.0"),
    sddc("sddc-0007"),
    sddc("sddc-0008"),
]


def plan(**overrides: Any) -> Any:
    data: dict[str, Any] = {
        "rollout": "r1",
        "release": "1.26.0",
        "defaults": {
            "max_parallel": 2,
            "max_fail_percentage": 20,
            "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
        },
        # listed out of order on purpose: `main` runs after `early`, which runs after `canary`
        "waves": [
            {
                "name": "main",
                "schedule": "after:early",
                "size": "100%",
                "selector": {"exclude_ids": ["sddc-0008"]},
            },
            {"name": "canary", "size": 3, "canary_size": 1},
            {"name": "early", "schedule": "after:canary", "size": 2},
        ],
    }
    data.update(overrides)
    return parse_plan(data)


def preview(**kwargs: Any) -> Any:
    return plan_preview(plan(), INVENTORY, upgrade_from={"1.26.0": ["1.25.0"]}, now=NOW, **kwargs)


def test_waves_are_ordered_by_their_after_chain() -> None:
    assert [w.name for w in run_order(plan())] == ["canary", "early", "main"]
    result = preview()
    assert result.order == ["canary", "early", "main"]
    assert [(w.wave, w.order, w.after) for w in result.waves] == [
        ("canary", 1, None),
        ("early", 2, "canary"),
        ("main", 3, "early"),
    ]


def test_each_wave_takes_what_the_engine_would_after_the_earlier_waves() -> None:
    result = preview()
    canary, early, main = result.waves
    the_plan = plan()
    engine = select_cohort(the_plan.wave("canary"), INVENTORY, upgrade_from=["1.25.0"])
    assert canary.ids == engine.ids == ["sddc-0002", "sddc-0001", "sddc-0003"]
    assert canary.canary_ids == ["sddc-0002"]  # canary-labelled first, first canary_size of them
    assert canary.excluded == engine.excluded
    assert early.ids == ["sddc-0004", "sddc-0007"]
    assert main.ids == []  # the rest is excluded by the selector, wrong path or already there
    reasons = {e.sddc_id: (e.reason, e.detail) for e in main.excluded}
    assert reasons["sddc-0001"] == (R.CLAIMED_BY_OTHER_WAVE, "taken by earlier wave canary")
    assert reasons["sddc-0004"] == (R.CLAIMED_BY_OTHER_WAVE, "taken by earlier wave early")
    assert reasons["sddc-0005"][0] is R.UPGRADE_PATH_NOT_SUPPORTED
    assert reasons["sddc-0006"][0] is R.ALREADY_AT_TARGET
    assert reasons["sddc-0008"][0] is R.EXCLUDED_BY_SELECTOR


def test_only_wave_still_lets_earlier_waves_take_their_share() -> None:
    result = preview(only_wave="early")
    assert [w.wave for w in result.waves] == ["early"]
    assert result.waves[0].ids == ["sddc-0004", "sddc-0007"]


def test_members_carry_their_next_maintenance_window() -> None:
    members = {m.sddc_id: m for m in preview().waves[0].members}
    monday = members["sddc-0001"].maintenance_window
    assert monday is not None and monday.open_now
    assert monday.closes_at == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    sunday = members["sddc-0003"].maintenance_window
    assert sunday is not None and not sunday.open_now
    assert sunday.opens_at == datetime(2026, 3, 8, 22, 0, tzinfo=UTC)
    assert members["sddc-0002"].maintenance_window is None


def test_claims_of_other_waves_exclude_but_the_waves_own_do_not() -> None:
    def holder(sddc_id: str, wave: str, rollout: str = "r1") -> ClaimHolder:
        return ClaimHolder(sddc_id=sddc_id, rollout=rollout, wave=wave, run_id="x", claimed_at=NOW)

    active = {
        "sddc-0001": holder("sddc-0001", "canary"),
        "sddc-0002": holder("sddc-0002", "hotfix"),
        "sddc-0003": holder("sddc-0003", "canary", rollout="r0"),
    }
    assert claims_of_others(active, rollout="r1", wave="canary") == {
        "sddc-0002": "r1/hotfix",
        "sddc-0003": "r0/canary",
    }
    cohort = cohort_for_run(
        plan().wave("canary"), INVENTORY, rollout="r1", upgrade_from=["1.25.0"], active_claims=active
    )
    assert cohort.ids == ["sddc-0001", "sddc-0004", "sddc-0007"]
    excluded = {e.sddc_id: e.detail for e in cohort.excluded if e.reason is R.CLAIMED_BY_OTHER_WAVE}
    assert excluded == {"sddc-0002": "claimed by wave r1/hotfix", "sddc-0003": "claimed by wave r0/canary"}


def test_target_version_override_applies_to_every_wave() -> None:
    result = plan_preview(
        plan(), INVENTORY, upgrade_from={"1.27.0": ["1.26.0"]}, now=NOW, target_version="1.27.0"
    )
    assert result.waves[0].ids == ["sddc-0006"]
    assert {w.target_version for w in result.waves} == {"1.27.0"}


def test_markdown_lists_members_slices_exclusions_and_windows() -> None:
    text = wave_markdown(preview().waves[0], now=NOW)
    assert "| 1 | sddc-0002 | canary |" in text
    assert "| 2 | sddc-0001 | bulk |" in text
    assert "open now until Mon 2026-03-02 12:00 UTC" in text
    assert "| sddc-0005 | UPGRADE_PATH_NOT_SUPPORTED |" in text
    assert "**Excluded 5**" in text
