"""Is the canary worse than the baseline? A one-sided Mann-Whitney U test, as Kayenta does.

Mann-Whitney makes no assumption about the shape of the distributions (error
rates and latencies are skewed), and with few readings it stays honest: the
smallest p-value it can reach grows as samples shrink, so too little data is
reported as inconclusive instead of as a pass or a fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from statistics import median

from pydantic import BaseModel, ConfigDict


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Comparison(BaseModel):
    """The outcome of comparing one signal of the canary with the baseline."""

    model_config = ConfigDict(frozen=True)

    signal: str
    verdict: Verdict
    n_canary: int
    n_baseline: int
    canary_median: float | None = None
    baseline_median: float | None = None
    p_value: float | None = None
    detail: str

    def line(self) -> str:
        return f"{self.signal}: {self.verdict.value}: {self.detail}"


def compare(
    signal: str,
    canary: Sequence[float],
    baseline: Sequence[float],
    *,
    min_samples: int,
    alpha: float,
    min_effect: float,
) -> Comparison:
    """FAIL when the canary is significantly higher (p < alpha) AND its median is more than
    `min_effect` (relative) above the baseline's; INCONCLUSIVE below `min_samples` a side."""
    n_c, n_b = len(canary), len(baseline)
    if n_c < min_samples or n_b < min_samples:
        return Comparison(
            signal=signal,
            verdict=Verdict.INCONCLUSIVE,
            n_canary=n_c,
            n_baseline=n_b,
            detail=f"too little data: {n_c} canary and {n_b} baseline readings, need {min_samples} each",
        )
    c_med, b_med = float(median(canary)), float(median(baseline))
    if len(set(canary) | set(baseline)) == 1:
        p_value = 1.0  # every reading equal: no difference to test
    else:
        from scipy.stats import mannwhitneyu  # heavy: imported when judging, never at DAG parse

        p_value = float(mannwhitneyu(canary, baseline, alternative="greater").pvalue)
    threshold = b_med * (1 + min_effect)
    worse = p_value < alpha and c_med > threshold
    verdict = Verdict.FAIL if worse else Verdict.PASS
    detail = (
        f"canary median {c_med:.4g} vs baseline {b_med:.4g} (n={n_c}/{n_b}), "
        f"p={p_value:.3g} (alpha {alpha:g}), effect bound {threshold:.4g}"
    )
    return Comparison(
        signal=signal,
        verdict=verdict,
        n_canary=n_c,
        n_baseline=n_b,
        canary_median=c_med,
        baseline_median=b_med,
        p_value=p_value,
        detail=detail,
    )
