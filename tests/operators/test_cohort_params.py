"""Trigger params that pass the params form but cannot make a run: resolve_cohort refuses them
with a clear reason before claiming anything, and nothing mutating reaches the API.

The cheapest real level: ResolveCohortOperator run directly (no DAG run) against the
simulator as a real process, with a real ledger. What the form itself refuses (malformed
versions and ids, max_parallel 0 or above the plan) is covered by the `invalid-*` scenarios
of tests/dags/test_wave_dags_test.py; the form's own limits on `sddc_ids` (count,
duplicates) are checked here on the DAG's params.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, ParamValidationError

from rce_lib.airflow_support import ledger_conn
from rce_lib.dag_factory import MAX_COHORT_IDS, build_wave_dag
from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger, dispose_engine
from rce_lib.operators.cohort import ResolveCohortOperator
from rce_lib.plan.loader import load_plan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROLLOUT = "params-rollout"
# sddc-0001..0004 are at 1.25.0 in the seed-42 fleet
PLAN = f"""
rollout: {ROLLOUT}
release: 1.26.0
defaults:
  max_fail_percentage: 50
  gate: {{max_error_rate: 0.05, max_p95_latency_ms: 800}}
waves:
  - name: first
    selector: {{sddc_ids: [sddc-0001, sddc-0002, sddc-0003, sddc-0004]}}
    size: 4
    max_parallel: 2
"""
# 1.27.0: a release the fleet (at 1.24.0 / 1.25.0 / 1.26.0) has no direct path to. The fleet takes
# its versions from the last three releases listed, so it goes first.
SIM_CONFIG = {
    "releases": [
        {
            "version": "1.27.0",
            "vcenter": "8.0.3-3",
            "nsx": "4.2.2-1",
            "esx": "8.0.3-3",
            "upgrade_from": ["1.26.0"],
        },
        {"version": "1.24.0", "vcenter": "8.0.2-1", "nsx": "4.1.2-1", "esx": "8.0.2-1"},
        {
            "version": "1.25.0",
            "vcenter": "8.0.3-1",
            "nsx": "4.2.0-1",
            "esx": "8.0.3-1",
            "upgrade_from": ["1.24.0"],
        },
        {
            "version": "1.26.0",
            "vcenter": "8.0.3-2",
            "nsx": "4.2.1-1",
            "esx": "8.0.3-2",
            "upgrade_from": ["1.25.0"],
        },
    ]
}


class FakeTi:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}
        self.try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.fixture
def env(
    sim_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Ledger, Path]]:
    sim = sim_factory(size=8, time_scale=6000, config=SIM_CONFIG)
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(sim.url, sim.token))
    ledger_conn._ledger_for.cache_clear()
    plan = tmp_path / "rollout.yaml"
    plan.write_text(PLAN)
    yield sim, Ledger(url), plan
    dispose_engine(url)


def _resolve(plan: Path, **kw: Any) -> tuple[list[str], FakeTi]:
    op = ResolveCohortOperator(
        task_id="resolve_cohort",
        rollout=ROLLOUT,
        wave="first",
        target_version=kw.pop("target_version", "1.26.0"),
        plan_path=str(plan),
        **kw,
    )
    ti = FakeTi()
    return op.execute({"run_id": "run-1", "ti": ti}), ti  # type: ignore[arg-type]


def _assert_untouched(sim: Any, ledger: Ledger, *, api_requests: bool = True) -> None:
    counters = sim.counters()
    assert counters["mutating_calls"] == 0 and counters["tasks_created"] == {}
    gets = [r for r in counters["requests"] if r["route"].startswith("/api/")]
    assert bool(gets) is api_requests, gets
    assert all(r["method"] == "GET" for r in gets)
    assert ledger.active_claims() == {}
    assert ledger.list_progress(rollout=ROLLOUT, wave="first") == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        pytest.param(
            {"target_version": "9.9.9"},
            r"\[INVALID_PARAMS\] release 9\.9\.9 is unknown to the SDDC API",
            id="unknown-release",
        ),
        pytest.param(
            {"target_version": "1.27.0"},
            r"\[UPGRADE_PATH_NOT_SUPPORTED\] no SDDC of wave 'first' can upgrade to 1\.27\.0: "
            r"it upgrades from 1\.26\.0, the wave's SDDCs are at 1\.25\.0",
            id="unsupported-path",
        ),
        pytest.param(
            {"sddc_ids": ["sddc-0006", "sddc-0999"]},
            r"\[INVALID_PARAMS\] sddc_ids: none is an SDDC of wave 'first' .*sddc-0006, sddc-0999",
            id="ids-outside-the-wave",
        ),
    ],
)
def test_a_trigger_that_cannot_make_a_run_is_refused_before_any_claim(
    env: tuple[Any, Ledger, Path], kw: dict[str, Any], message: str
) -> None:
    sim, ledger, plan = env
    with pytest.raises(AirflowFailException, match=message):
        _resolve(plan, **kw)
    _assert_untouched(sim, ledger)


def test_more_ids_than_a_run_may_name_are_refused_before_any_request(env: tuple[Any, Ledger, Path]) -> None:
    sim, ledger, plan = env
    ids = [f"sddc-{i:04d}" for i in range(MAX_COHORT_IDS + 1)]
    with pytest.raises(
        AirflowFailException, match=rf"\[INVALID_PARAMS\] sddc_ids names {MAX_COHORT_IDS + 1}"
    ):
        _resolve(plan, sddc_ids=ids)
    # as rendered from the params ("['sddc-0000', ...]"), too
    with pytest.raises(AirflowFailException, match=r"\[INVALID_PARAMS\]"):
        _resolve(plan, sddc_ids=repr(ids))
    _assert_untouched(sim, ledger, api_requests=False)


def test_an_empty_cohort_is_a_run_with_nothing_to_do(
    env: tuple[Any, Ledger, Path], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every SDDC of the wave already at the target (a re-run of a finished wave): not an
    error; the log says why each was left out, and nothing is claimed or changed."""
    sim, ledger, plan = env
    members, ti = _resolve(plan, target_version="1.25.0")
    assert members == [] and ti.pushed["canary"] == [] and ti.pushed["bulk"] == []
    log = caplog.text + capsys.readouterr().out  # Airflow's task logger may write to stdout
    assert "[EMPTY_COHORT] nothing to upgrade" in log and "ALREADY_AT_TARGET 4" in log
    counters = sim.counters()
    assert counters["mutating_calls"] == 0 and ledger.active_claims() == {}
    resolved = ledger.events(rollout=ROLLOUT, wave="first", kinds=["cohort_resolved"])
    assert [e.data["members"] for e in resolved] == [[]]
    assert {e["reason"] for e in resolved[0].data["excluded"]} == {"ALREADY_AT_TARGET"}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        pytest.param(
            {"sddc_ids": [f"sddc-{i:04d}" for i in range(MAX_COHORT_IDS + 1)]},
            "is too long",
            id="too-many-ids",
        ),
        pytest.param({"sddc_ids": ["sddc-0001", "sddc-0001"]}, "non-unique elements", id="duplicate-ids"),
    ],
)
def test_the_params_form_refuses_oversized_and_duplicate_id_lists(
    tmp_path: Path, conf: dict[str, Any], message: str
) -> None:
    plan_path = tmp_path / "rollout.yaml"
    plan_path.write_text(PLAN)
    plan = load_plan(plan_path)
    dag = build_wave_dag(plan, plan.wave("first"), plan_path=str(plan_path))
    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError, match=message):  # as Airflow checks a trigger's conf
        for key, value in conf.items():
            params[key] = value
        params.validate()
