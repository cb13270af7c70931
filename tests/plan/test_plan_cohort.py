"""Cohort selection: selector, exclusions with reasons, size, canary slice, overrides, determinism."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rce_lib.api.models import SddcSummary
from rce_lib.errors import ParamsError
from rce_lib.plan.cohort import Cohort, ExclusionReason, select_cohort
from rce_lib.plan.model import Wave

R = ExclusionReason
UPGRADE_FROM = ["1.24.0", "1.25.0"]


def sddc(
    sddc_id: str,
    *,
    region: str = "us-east-1",
    version: str = "1.25.0",
    status: str = "READY",
    host_count: int = 3,
    **labels: str,
) -> SddcSummary:
    """An inventory entry as the API would list it."""
    return SddcSummary.model_validate(
        {
            "id": sddc_id,
            "org_id": "org-1",
            "region": region,
            "version": version,
            "status": status,
            "host_count": host_count,
            "labels": labels,
        }
    )


def make_wave(**fields: Any) -> Wave:
    """A wave with defaults applied, as RolloutPlan.effective_waves() would give it."""
    base: dict[str, Any] = {
        "name": "w",
        "release": "1.26.0",
        "size": "100%",
        "max_parallel": 4,
        "max_fail_percentage": 20,
        "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
    }
    return Wave.model_validate({**base, **fields})


def fleet(count: int, **kwargs: Any) -> list[SddcSummary]:
    return [sddc(f"sddc-{i:04d}", **kwargs) for i in range(1, count + 1)]


def reasons(cohort: Cohort) -> dict[str, ExclusionReason]:
    return {item.sddc_id: item.reason for item in cohort.excluded}


def test_selector_criteria_are_anded_and_lists_are_ored() -> None:
    inventory = [
        sddc("a", region="us-east-1", tier="gold", env="prod"),
        sddc("b", region="us-west-2", tier="gold", env="prod"),
        sddc("c", region="eu-central-1", tier="gold", env="prod"),
        sddc("d", region="us-east-1", tier="silver", env="prod"),
        sddc("e", region="us-east-1", tier="gold", env="staging"),
        sddc("f", region="us-east-1", version="1.24.0", tier="gold", env="prod"),
    ]
    wave = make_wave(
        selector={
            "regions": ["us-east-1", "us-west-2"],
            "labels": {"tier": "gold", "env": "prod"},
            "versions": ["1.25.0"],
        }
    )
    cohort = select_cohort(wave, inventory, upgrade_from=UPGRADE_FROM)
    assert cohort.ids == ["a", "b"]
    assert cohort.excluded == []  # non-matching SDDCs are simply not candidates


def test_selector_sddc_ids_limit_candidates_and_report_unknown_ids() -> None:
    wave = make_wave(selector={"sddc_ids": ["sddc-0002", "sddc-0003", "sddc-0099"]})
    cohort = select_cohort(wave, fleet(5), upgrade_from=UPGRADE_FROM)
    assert cohort.ids == ["sddc-0002", "sddc-0003"]
    assert reasons(cohort) == {"sddc-0099": R.NOT_IN_INVENTORY}


def test_exclude_ids_are_reported_as_excluded_by_selector() -> None:
    wave = make_wave(selector={"exclude_ids": ["sddc-0002"]})
    cohort = select_cohort(wave, fleet(3), upgrade_from=UPGRADE_FROM)
    assert cohort.ids == ["sddc-0001", "sddc-0003"]
    assert reasons(cohort) == {"sddc-0002": R.EXCLUDED_BY_SELECTOR}


def test_already_at_or_past_target_is_excluded() -> None:
    inventory = [sddc("a"), sddc("b", version="1.26.0"), sddc("c", version="1.27.0")]
    cohort = select_cohort(make_wave(), inventory, upgrade_from=UPGRADE_FROM)
    assert cohort.ids == ["a"]
    assert reasons(cohort) == {"b": R.ALREADY_AT_TARGET, "c": R.ALREADY_AT_TARGET}


def test_blocked_upgrade_path_is_excluded() -> None:
    inventory = [sddc("a", version="1.23.0"), sddc("b", version="1.24.0"), sddc("c")]
    cohort = select_cohort(make_wave(), inventory, upgrade_from=["1.25.0"])
    assert cohort.ids == ["c"]
    assert reasons(cohort) == {"a": R.UPGRADE_PATH_NOT_SUPPORTED, "b": R.UPGRADE_PATH_NOT_SUPPORTED}
    assert "1.24.0 -> 1.26.0" in cohort.excluded[1].detail


def test_not_ready_and_unknown_status_are_excluded() -> None:
    inventory = [sddc("a"), sddc("b", status="DEGRADED"), sddc("c", status="HIBERNATING")]
    cohort = select_cohort(make_wave(), inventory, upgrade_from=UPGRADE_FROM)
    assert cohort.ids == ["a"]
    assert reasons(cohort) == {"b": R.NOT_READY, "c": R.NOT_READY}


def test_claimed_and_earlier_wave_sddcs_are_excluded() -> None:
    cohort = select_cohort(
        make_wave(),
        fleet(4),
        upgrade_from=UPGRADE_FROM,
        claimed={"sddc-0001": "early"},
        taken={"sddc-0002"},
    )
    assert cohort.ids == ["sddc-0003", "sddc-0004"]
    assert reasons(cohort) == {"sddc-0001": R.CLAIMED_BY_OTHER_WAVE, "sddc-0002": R.CLAIMED_BY_OTHER_WAVE}
    details = {item.sddc_id: item.detail for item in cohort.excluded}
    assert "early" in details["sddc-0001"] and "earlier wave" in details["sddc-0002"]


def test_claimed_may_be_a_plain_set() -> None:
    cohort = select_cohort(make_wave(), fleet(2), upgrade_from=UPGRADE_FROM, claimed={"sddc-0002"})
    assert cohort.ids == ["sddc-0001"]
    assert cohort.excluded_by(R.CLAIMED_BY_OTHER_WAVE) == ["sddc-0002"]


def test_count_size_takes_the_first_and_reports_the_rest_over_size() -> None:
    cohort = select_cohort(make_wave(size=3), fleet(5), upgrade_from=UPGRADE_FROM)
    assert cohort.ids == ["sddc-0001", "sddc-0002", "sddc-0003"]
    assert cohort.excluded_by(R.OVER_SIZE) == ["sddc-0004", "sddc-0005"]


def test_percent_size_is_of_what_remains_after_exclusions_rounded_up() -> None:
    inventory = fleet(10) + [sddc(f"done-{i}", version="1.26.0") for i in range(10)]
    cohort = select_cohort(make_wave(size="25%"), inventory, upgrade_from=UPGRADE_FROM)
    assert len(cohort.members) == 3  # ceil(10 * 0.25), the 10 at target do not count
    assert len(cohort.excluded_by(R.OVER_SIZE)) == 7
    assert len(cohort.excluded_by(R.ALREADY_AT_TARGET)) == 10


def test_small_percent_takes_at_least_one_and_nothing_left_gives_empty_cohort() -> None:
    assert len(select_cohort(make_wave(size="1%"), fleet(3), upgrade_from=UPGRADE_FROM).members) == 1
    empty = select_cohort(make_wave(size="50%"), fleet(2, version="1.26.0"), upgrade_from=UPGRADE_FROM)
    assert empty.empty and empty.members == []


def test_canary_labelled_sddcs_are_taken_first_and_form_the_canary_slice() -> None:
    inventory = [*fleet(6), sddc("sddc-0009", canary="true"), sddc("sddc-0008", canary="true")]
    cohort = select_cohort(make_wave(size=4, canary_size=3), inventory, upgrade_from=UPGRADE_FROM)
    assert cohort.ids == ["sddc-0008", "sddc-0009", "sddc-0001", "sddc-0002"]
    assert cohort.canary_ids == ["sddc-0008", "sddc-0009", "sddc-0001"]
    assert [m.canary for m in cohort.members] == [True, True, True, False]


def test_after_the_canary_the_sddcs_with_most_hosts_run_first_and_selection_stays_by_id() -> None:
    hosts = {"sddc-0001": 4, "sddc-0002": 2, "sddc-0003": 9, "sddc-0004": 2, "sddc-0005": 6, "sddc-0006": 30}
    inventory = [sddc(sddc_id, host_count=count) for sddc_id, count in hosts.items()]
    cohort = select_cohort(make_wave(size=5, canary_size=2), inventory, upgrade_from=UPGRADE_FROM)
    assert cohort.canary_ids == ["sddc-0001", "sddc-0002"]
    assert cohort.ids == ["sddc-0001", "sddc-0002", "sddc-0003", "sddc-0005", "sddc-0004"]
    assert [m.canary for m in cohort.members] == [True, True, False, False, False]
    assert [e.sddc_id for e in cohort.excluded] == ["sddc-0006"]
    # equals keep the selection order: a canary-labelled SDDC first, then by id
    labelled = [sddc("sddc-0001"), sddc("sddc-0002", host_count=5), sddc("sddc-0003", canary="true")]
    no_slice = select_cohort(make_wave(size=3, canary_size=0), labelled, upgrade_from=UPGRADE_FROM)
    assert no_slice.ids == ["sddc-0002", "sddc-0003", "sddc-0001"]


def test_canary_size_larger_than_percent_cohort_marks_all_members() -> None:
    cohort = select_cohort(make_wave(size="10%", canary_size=5), fleet(10), upgrade_from=UPGRADE_FROM)
    assert cohort.canary_ids == ["sddc-0001"]


def test_order_is_deterministic_whatever_the_inventory_order() -> None:
    inventory = [*fleet(20), sddc("sddc-0100", canary="true"), sddc("sddc-0050", version="1.26.0")]
    wave = make_wave(size="50%", canary_size=2)
    expected = select_cohort(wave, inventory, upgrade_from=UPGRADE_FROM)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = inventory[:]
        rng.shuffle(shuffled)
        assert select_cohort(wave, shuffled, upgrade_from=UPGRADE_FROM) == expected
    assert expected.ids[0] == "sddc-0100"


def test_sddc_ids_override_narrows_to_a_subset_of_the_selector() -> None:
    inventory = [*fleet(4), sddc("sddc-0005", region="eu-central-1")]
    wave = make_wave(size=1, selector={"regions": ["us-east-1"]})
    cohort = select_cohort(
        wave,
        inventory,
        upgrade_from=UPGRADE_FROM,
        sddc_ids=["sddc-0004", "sddc-0002", "sddc-0005", "sddc-0777"],
    )
    # the override replaces the size (the operator named them) but never widens the selector
    assert cohort.ids == ["sddc-0002", "sddc-0004"]
    assert reasons(cohort) == {"sddc-0005": R.NOT_IN_SELECTOR, "sddc-0777": R.NOT_IN_SELECTOR}


def test_sddc_ids_override_still_applies_exclusions() -> None:
    inventory = [sddc("a"), sddc("b", version="1.26.0")]
    cohort = select_cohort(
        make_wave(), inventory, upgrade_from=UPGRADE_FROM, sddc_ids=["a", "b"], claimed={"a"}
    )
    assert cohort.ids == []
    assert reasons(cohort) == {"a": R.CLAIMED_BY_OTHER_WAVE, "b": R.ALREADY_AT_TARGET}


def test_malformed_override_id_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match="Bad Id"):
        select_cohort(make_wave(), fleet(1), upgrade_from=UPGRADE_FROM, sddc_ids=["Bad Id"])


def test_max_parallel_override_may_only_lower() -> None:
    wave = make_wave(max_parallel=4)
    assert select_cohort(wave, fleet(2), upgrade_from=UPGRADE_FROM).max_parallel == 4
    assert select_cohort(wave, fleet(2), upgrade_from=UPGRADE_FROM, max_parallel=2).max_parallel == 2
    with pytest.raises(ParamsError, match="only lower"):
        select_cohort(wave, fleet(2), upgrade_from=UPGRADE_FROM, max_parallel=5)
    with pytest.raises(ParamsError, match="positive"):
        select_cohort(wave, fleet(2), upgrade_from=UPGRADE_FROM, max_parallel=0)


def test_target_version_defaults_to_the_wave_release_and_may_be_given() -> None:
    inventory = [sddc("a", version="1.24.0"), sddc("b", version="1.25.0")]
    assert select_cohort(make_wave(), inventory, upgrade_from=UPGRADE_FROM).target_version == "1.26.0"
    cohort = select_cohort(make_wave(), inventory, upgrade_from=["1.24.0"], target_version="1.25.0")
    assert (cohort.target_version, cohort.ids) == ("1.25.0", ["a"])
    assert reasons(cohort) == {"b": R.ALREADY_AT_TARGET}


def test_summary_names_wave_counts_and_reasons() -> None:
    inventory = [*fleet(5), sddc("sddc-0010", version="1.26.0")]
    cohort = select_cohort(
        make_wave(name="early", size=3, canary_size=1), inventory, upgrade_from=UPGRADE_FROM
    )
    text = cohort.summary()
    assert text.splitlines()[0] == "wave early -> 1.26.0: 3 SDDC(s), 1 canary, max_parallel 4"
    assert "canary: sddc-0001" in text
    assert "rest:   sddc-0002, sddc-0003" in text
    assert "excluded 3: ALREADY_AT_TARGET 1, OVER_SIZE 2" in text
