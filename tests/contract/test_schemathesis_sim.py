"""Property-based conformance of the simulator to the vendored contract (Schemathesis 4).

Every operation of include/contracts/sddc-api.yaml gets generated requests (valid ones, and
invalid ones the server must refuse with an answer the contract lists), sent to the REAL
simulator process with the bearer token; each answer must be no 5xx other than a documented
503, a status the operation lists, a listed content type, and a body that matches the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import SimServer

CONTRACT = Path(__file__).resolve().parents[2] / "include" / "contracts" / "sddc-api.yaml"
SCHEMA = schemathesis.openapi.from_path(CONTRACT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,  # Retry-After on every 429/503
]
RELEASES = ["1.24.0", "1.25.0", "1.26.0", "9.9.9"]
OPERATIONS = sorted(op.ok().label for op in SCHEMA.get_all_operations())
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 12}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(module_sim_factory: Any) -> Iterator[SimServer]:
    """A simulator of its own: generated mutations may hit any SDDC of its fleet."""
    yield module_sim_factory(size=6, time_scale=6000)


@pytest.fixture(scope="module")
def fleet(sim: SimServer) -> dict[str, list[str]]:
    """Real SDDC ids and their host ids: random ids would only ever reach the 404 answers."""
    return {s["id"]: [h["id"] for h in sim.sddc(s["id"])["hosts"]] for s in sim.state()["sddcs"]}


def _aim_at_the_fleet(case: Any, data: st.DataObject, fleet: dict[str, list[str]]) -> None:
    """Half of the valid cases talk about a real SDDC (and host, release, task), so that the
    202/200/409/422 answers of real work are generated too, not only 404s."""
    params = case.path_parameters or {}
    if "sddc_id" not in params or not data.draw(st.booleans(), label="real_sddc"):
        return
    sddc_id = data.draw(st.sampled_from(sorted(fleet)), label="sddc_id")
    params["sddc_id"] = sddc_id
    if "host_id" in params and fleet[sddc_id]:
        params["host_id"] = data.draw(st.sampled_from(fleet[sddc_id]), label="host_id")
    if isinstance(case.body, dict) and "target_version" in case.body:
        case.body["target_version"] = data.draw(st.sampled_from(RELEASES), label="target_version")


def _operation(label: str) -> Any:
    for result in SCHEMA.get_all_operations():
        op = result.ok()
        if op.label == label:
            return op
    raise LookupError(label)


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=str)
@pytest.mark.parametrize("label", OPERATIONS)
def test_simulator_answers_every_generated_request_as_the_contract_says(
    sim: SimServer, fleet: dict[str, list[str]], label: str, mode: GenerationMode
) -> None:
    auth = {"Authorization": f"Bearer {sim.token}"}

    @given(case=_operation(label).as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any, data: st.DataObject) -> None:
        if mode is GenerationMode.POSITIVE:
            _aim_at_the_fleet(case, data, fleet)
        case.call_and_validate(base_url=sim.url, headers=auth, checks=CHECKS)

    check()


def test_generated_requests_reached_real_work(sim: SimServer) -> None:
    """Runs after the generated cases (file order): they must have started real tasks, not only
    collected 404s, or the conformance of the 200/202/409 answers was never checked."""
    statuses = {(r["method"], r["status"]) for r in sim.counters()["requests"]}
    if not statuses:
        pytest.skip("run on its own: no generated request to look at")
    assert {("POST", "202"), ("GET", "200"), ("POST", "404")} <= statuses, sorted(statuses)
