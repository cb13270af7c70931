"""The baseline comparison: Mann-Whitney U, one-sided, with a minimum sample and an effect size."""

from __future__ import annotations

import random

import pytest

from rce_lib.gate.stats import Verdict, compare

HEALTHY = [0.002, 0.004, 0.006, 0.003, 0.009, 0.005, 0.007, 0.001, 0.008, 0.004]


def test_clearly_worse_canary_fails() -> None:
    result = compare(
        "error_rate", [0.031, 0.035, 0.04, 0.033], HEALTHY, min_samples=3, alpha=0.05, min_effect=0.5
    )
    assert result.verdict is Verdict.FAIL
    assert result.p_value is not None and result.p_value < 0.01
    assert result.canary_median == pytest.approx(0.034)


def test_too_few_readings_is_inconclusive_not_a_pass() -> None:
    result = compare("error_rate", [0.3, 0.4], HEALTHY, min_samples=3, alpha=0.05, min_effect=0.5)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "need 3" in result.detail and result.p_value is None


def test_significant_but_small_difference_passes_under_the_effect_bound() -> None:
    """Many readings make a tiny shift significant; min_effect keeps it from failing the gate."""
    rng = random.Random(7)
    base = [0.005 + rng.random() * 0.001 for _ in range(200)]
    canary = [0.0055 + rng.random() * 0.001 for _ in range(200)]
    result = compare("error_rate", canary, base, min_samples=3, alpha=0.05, min_effect=0.5)
    assert result.p_value is not None and result.p_value < 0.05
    assert result.verdict is Verdict.PASS


def test_same_distribution_passes() -> None:
    rng = random.Random(3)
    base = [rng.uniform(80, 250) for _ in range(30)]
    canary = [rng.uniform(80, 250) for _ in range(8)]
    assert compare("p95", canary, base, min_samples=3, alpha=0.05, min_effect=0.5).verdict is Verdict.PASS


def test_better_canary_never_fails() -> None:
    canary = [0.0001] * 5
    result = compare("error_rate", canary, HEALTHY, min_samples=3, alpha=0.05, min_effect=0.0)
    assert result.verdict is Verdict.PASS
    assert result.p_value is not None and result.p_value > 0.5


def test_all_equal_readings_pass_without_a_test() -> None:
    result = compare("error_rate", [0.01] * 4, [0.01] * 6, min_samples=3, alpha=0.05, min_effect=0.0)
    assert result.verdict is Verdict.PASS and result.p_value == 1.0
