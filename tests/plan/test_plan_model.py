"""The plan model: defaults inheritance, derived wave properties and cross-field checks."""

from __future__ import annotations

from typing import Any

import pytest

from rce_lib.errors import PlanError, Reason
from rce_lib.plan.model import RolloutPlan, Wave, parse_plan


def test_waves_inherit_defaults_unless_they_set_the_field(plan_data: dict[str, Any]) -> None:
    plan = parse_plan(plan_data)
    canary, early, main = plan.effective_waves()
    assert (canary.max_parallel, early.max_parallel, main.max_parallel) == (4, 4, 8)
    assert canary.bake_seconds == early.bake_seconds == main.bake_seconds == 30
    assert main.gate.max_p95_latency_ms == 800
    assert canary.release == main.release == "1.26.0"
    assert early.canary_size == 0


def test_wave_setting_schedule_null_overrides_a_cron_default(plan_data: dict[str, Any]) -> None:
    plan_data["defaults"]["schedule"] = "0 6 * * 1"
    plan_data["waves"][0]["schedule"] = None
    plan = parse_plan(plan_data)
    assert plan.wave("canary").schedule is None
    assert plan.wave("early").after == "canary"


def test_a_cron_default_is_inherited(plan_data: dict[str, Any]) -> None:
    plan_data["defaults"]["schedule"] = "0  6 * * 1"
    plan_data["waves"][0].pop("schedule", None)
    wave = parse_plan(plan_data).wave("canary")
    assert wave.cron == "0 6 * * 1"
    assert wave.after is None


def test_wave_gate_replaces_the_default_gate_whole(plan_data: dict[str, Any]) -> None:
    plan_data["waves"][2]["gate"] = {"max_error_rate": 0.01, "max_p95_latency_ms": 500}
    main = parse_plan(plan_data).wave("main")
    assert (main.gate.max_error_rate, main.gate.max_p95_latency_ms) == (0.01, 500)


def test_wave_release_overrides_plan_release(plan_data: dict[str, Any]) -> None:
    plan_data["waves"][0]["release"] = "1.25.1"
    plan = parse_plan(plan_data)
    assert plan.wave("canary").release == "1.25.1"
    assert plan.wave("early").release == "1.26.0"


def test_manual_schedule_means_no_schedule(plan_data: dict[str, Any]) -> None:
    plan_data["waves"][0]["schedule"] = "manual"
    wave = parse_plan(plan_data).wave("canary")
    assert wave.schedule is None and wave.cron is None and wave.after is None


def test_wave_dag_id_and_order_helpers(plan_data: dict[str, Any]) -> None:
    plan = parse_plan(plan_data)
    assert [w.dag_id for w in plan.effective_waves()] == [
        "rce_wave_canary",
        "rce_wave_early",
        "rce_wave_main",
    ]
    assert plan.earlier_waves("main") == ["canary", "early"]
    assert plan.earlier_waves("canary") == []


def test_unknown_wave_name_is_a_plan_error(plan_data: dict[str, Any]) -> None:
    plan = parse_plan(plan_data)
    with pytest.raises(PlanError, match="no wave 'nope'"):
        plan.wave("nope")
    with pytest.raises(PlanError, match="no wave 'nope'"):
        plan.earlier_waves("nope")


def test_label_booleans_become_api_strings(plan_data: dict[str, Any]) -> None:
    plan_data["waves"][0]["selector"] = {"labels": {"canary": True, "tier": "gold"}}
    assert parse_plan(plan_data).wave("canary").selector.labels == {"canary": "true", "tier": "gold"}


def test_size_percent_is_normalised(plan_data: dict[str, Any]) -> None:
    plan_data["waves"][1]["size"] = " 25 % "
    wave = parse_plan(plan_data).wave("early")
    assert wave.size == "25%"
    assert (wave.size_percent, wave.size_count) == (25, None)


@pytest.mark.parametrize(
    ("size", "remaining", "expected"),
    [
        (6, 24, 6),
        (6, 4, 4),
        (6, 0, 0),
        ("25%", 10, 3),
        ("25%", 8, 2),
        ("1%", 3, 1),
        ("100%", 7, 7),
        ("50%", 0, 0),
    ],
)
def test_resolve_size_counts_and_rounds_percent_up(size: int | str, remaining: int, expected: int) -> None:
    wave = Wave.model_validate(
        {
            "name": "w",
            "release": "1.26.0",
            "size": size,
            "max_parallel": 1,
            "max_fail_percentage": 0,
            "gate": {"max_error_rate": 0, "max_p95_latency_ms": 1},
        }
    )
    assert wave.resolve_size(remaining) == expected


def test_plan_error_carries_invalid_plan_reason(plan_data: dict[str, Any]) -> None:
    plan_data["release"] = "latest"
    with pytest.raises(PlanError) as info:
        parse_plan(plan_data, source="x.yaml")
    assert info.value.reason is Reason.INVALID_PLAN
    assert str(info.value).startswith("[INVALID_PLAN] x.yaml:")


def test_rollout_plan_validates_on_its_own(plan_data: dict[str, Any]) -> None:
    """Callers that build plans with RolloutPlan.model_validate still get the cross-field checks."""
    plan_data["waves"][1]["schedule"] = "after:ghost"
    with pytest.raises(ValueError, match=r"waves\[1\]\.schedule \(wave 'early'\)"):
        RolloutPlan.model_validate(plan_data)


@pytest.mark.parametrize(
    ("size", "ids", "excluded", "canary", "ok"),
    [
        ("50%", ["a-1", "a-2", "a-3", "a-4"], [], 2, True),
        ("50%", ["a-1", "a-2", "a-3", "a-4"], [], 3, False),  # 50% of 4 named SDDCs is 2
        ("100%", ["a-1", "a-2", "a-3"], ["a-3"], 3, False),  # excluded ids do not count
        (10, ["a-1", "a-2"], [], 3, False),  # a fixed size larger than the named SDDCs
        ("10%", [], [], 50, True),  # inventory-dependent: only resolve_cohort can tell (it warns)
    ],
)
def test_a_canary_larger_than_a_statically_known_cohort_is_a_plan_error(
    plan_data: dict[str, Any], size: int | str, ids: list[str], excluded: list[str], canary: int, ok: bool
) -> None:
    wave = plan_data["waves"][0]
    wave.update(size=size, canary_size=canary, selector={"sddc_ids": ids, "exclude_ids": excluded})
    if ok:
        parse_plan(plan_data)
        return
    with pytest.raises(PlanError, match=r"canary_size .* larger than the largest cohort"):
        parse_plan(plan_data)
