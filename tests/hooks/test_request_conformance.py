"""Every request the hooks send is one the contract allows.

Each public operation of SddcApiHook and SddcApiAsyncHook runs against the scripted fake
server; every request it RECEIVED (as bytes on the wire, not as the hook meant it) is then
checked against include/contracts/sddc-api.yaml: the path matches one path template with
each parameter matching its schema, the method is allowed there, query parameters are
declared and valid, the body validates against the requestBody schema, and the headers are
the bearer token, a W3C traceparent, a valid Idempotency-Key on every mutation, and nothing
the contract does not know.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from _fake_api import TOKEN, FakeApi, Reply, health_json, problem, sddc_json, task_json
from _fake_clock import FakeClock

from rce_lib.hooks.sddc_api import SddcApiAsyncHook, SddcApiHook
from tests.contract._contract import Contract, SentRequest

KEY = "rce:precheck:sddc-1:-:g0:0123456789abcdef01234567"
RELEASE = {"version": "1.3.0", "components": {"vcenter": "a", "nsx": "b", "esx": "c"}, "upgrade_from": []}
#: Public methods that send nothing of their own (session plumbing, BaseHook's API).
NOT_OPERATIONS = {"get_conn", "close", "base_url"}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


def _public_operations(cls: type) -> set[str]:
    own = {name for klass in cls.__mro__ if klass.__module__.startswith("rce_lib.") for name in vars(klass)}
    return {
        name
        for name in own
        if not name.startswith("_")
        and inspect.isfunction(getattr(cls, name, None))
        and name not in NOT_OPERATIONS
    }


def _sync_calls(hook: SddcApiHook) -> dict[str, list[tuple[Any, list[Reply]]]]:
    """Each public operation: (call, the answers it needs), with every optional input used once."""
    page = {"items": [sddc_json("a-1")], "next_cursor": "c-2"}
    last = {"items": [], "next_cursor": None}
    task = lambda t="PRECHECK", i="t-1": Reply(202, task_json(i, type_=t))  # noqa: E731
    return {
        "list_sddcs": [
            (
                lambda: list(hook.list_sddcs(region="eu-west-1", version="1.2.0", labels={"tier": "gold"})),
                [Reply(200, page), Reply(200, last)],
            ),
            (lambda: list(hook.list_sddcs(page_size=500)), [Reply(200, last)]),
        ],
        "get_sddc": [(lambda: hook.get_sddc("sddc-1"), [Reply(200, sddc_json())])],
        "get_health": [(lambda: hook.get_health("sddc-1", window_s=30), [Reply(200, health_json())])],
        "list_sddc_tasks": [
            (
                lambda: hook.list_sddc_tasks("sddc-1", type="UPGRADE_HOST", status="RUNNING", limit=200),
                [Reply(200, {"items": []})],
            ),
            (lambda: hook.list_sddc_tasks("sddc-1"), [Reply(200, {"items": []})]),
        ],
        "get_task": [(lambda: hook.get_task("Task-9"), [Reply(200, task_json("Task-9"))])],
        "get_release": [(lambda: hook.get_release("1.3.0"), [Reply(200, RELEASE)])],
        "start_precheck": [
            (lambda: hook.start_precheck("sddc-1", "1.3.0", key=KEY), [task()]),
            # 409 OPERATION_IN_PROGRESS: the adopting GET must conform too
            (
                lambda: hook.start_precheck("sddc-1", "1.3.0", key=KEY),
                [
                    problem(409, "OPERATION_IN_PROGRESS", existing_task_id="t-7"),
                    Reply(200, task_json("t-7")),
                ],
            ),
        ],
        "start_snapshot": [
            (lambda: hook.start_snapshot("sddc-1", key=KEY), [task("SNAPSHOT")]),
            (lambda: hook.start_snapshot("sddc-1", key=KEY, label="x" * 128), [task("SNAPSHOT")]),
        ],
        "start_component_upgrade": [
            (
                lambda: hook.start_component_upgrade("sddc-1", "vcenter", "1.3.0", key=KEY),
                [task("UPGRADE_VCENTER")],
            ),
            (lambda: hook.start_component_upgrade("sddc-1", "nsx", "1.3.0", key=KEY), [task("UPGRADE_NSX")]),
        ],
        "set_host_maintenance": [
            (lambda: hook.set_host_maintenance("sddc-1", "h-1", True, key=KEY), [task("HOST_MAINTENANCE")]),
            (
                lambda: hook.set_host_maintenance("sddc-1", "h-1", False, key="k" * 128),
                [task("HOST_MAINTENANCE")],
            ),
        ],
        "start_host_upgrade": [
            (lambda: hook.start_host_upgrade("sddc-1", "h-1", "10.0.12", key=KEY), [task("UPGRADE_HOST")]),
        ],
        "start_rollback": [(lambda: hook.start_rollback("sddc-1", "Snap-1", key=KEY), [task("ROLLBACK")])],
        "test_connection": [(hook.test_connection, [Reply(200, last)])],
    }


def _async_calls(hook: SddcApiAsyncHook) -> dict[str, list[tuple[Any, list[Reply]]]]:
    return {
        "get_task": [(lambda: hook.get_task("t-1"), [Reply(200, task_json())])],
        "get_sddc": [(lambda: hook.get_sddc("sddc-1"), [Reply(200, sddc_json())])],
        "get_health": [(lambda: hook.get_health("sddc-1", window_s=86400), [Reply(200, health_json())])],
        "list_sddc_tasks": [
            (
                lambda: hook.list_sddc_tasks("sddc-1", type="ROLLBACK", status="QUEUED", limit=1),
                [Reply(200, {"items": []})],
            ),
        ],
    }


def _check_all(api: FakeApi, contract: Contract) -> set[str]:
    assert api.seen, "no request was sent"
    operations = set()
    for seen in api.seen:
        sent = SentRequest(seen.method, seen.path, seen.query, seen.headers, seen.body)
        operations.add(contract.check_request(sent, token=TOKEN))
    return operations


def test_every_request_of_the_sync_hook_conforms(
    api: FakeApi, connect: Any, clock: FakeClock, contract: Contract
) -> None:
    hook = SddcApiHook(sleep=clock.sleep, clock=clock)
    calls = _sync_calls(hook)
    assert set(calls) == _public_operations(SddcApiHook), "a public operation is not exercised here"
    for cases in calls.values():
        for call, replies in cases:
            api.script(*replies)
            call()
    assert not api.replies, "an answer was left unused: a call sent fewer requests than expected"
    every_operation = {op["operationId"] for _, _, op in contract.operations()}
    assert _check_all(api, contract) == every_operation


def test_every_request_of_the_async_hook_conforms(
    api: FakeApi, connect: Any, clock: FakeClock, contract: Contract
) -> None:
    hook = SddcApiAsyncHook(sleep=clock.asleep, clock=clock)
    calls = _async_calls(hook)
    assert set(calls) == _public_operations(SddcApiAsyncHook), "a public operation is not exercised here"

    async def main() -> None:
        for cases in calls.values():
            for call, replies in cases:
                api.script(*replies)
                await call()

    asyncio.run(main())
    assert not api.replies
    assert _check_all(api, contract) == {"getTask", "getSddc", "getSddcHealth", "listSddcTasks"}


@pytest.mark.parametrize(
    ("sent", "fragment"),
    [
        (SentRequest("GET", "/api/v1/sddcs/../tasks", [], {}, b""), "sddc_id"),
        (SentRequest("DELETE", "/api/v1/sddcs/s-1", [], {}, b""), "not allowed"),
        (SentRequest("GET", "/api/v1/sddcs/S_1", [], {}, b""), "sddc_id"),
        (SentRequest("GET", "/api/v1/sddcs", [("limit", "501")], {}, b""), "limit"),
        (SentRequest("GET", "/api/v1/sddcs", [("page", "2")], {}, b""), "not in the contract"),
        (SentRequest("GET", "/api/v1/sddcs/s-1", [], {"x-verify": "false"}, b""), "does not know"),
        (SentRequest("GET", "/api/v1/sddcs/s-1", [], {"traceparent": "00-xyz"}, b""), "traceparent"),
        (
            SentRequest("POST", "/api/v1/sddcs/s-1/prechecks", [], {}, b'{"target_version": "1.3.0"}'),
            "Idempotency",
        ),
        (
            SentRequest("POST", "/api/v1/sddcs/s-1/prechecks", [], {"idempotency-key": "a b"}, b"{}"),
            "idempotency-key",
        ),
        (SentRequest("POST", "/api/v1/sddcs/s-1/prechecks", [], {"idempotency-key": "k"}, b"{}"), "body"),
        (
            SentRequest(
                "PUT",
                "/api/v1/sddcs/s-1/hosts/h-1/maintenance",
                [],
                {"idempotency-key": "k"},
                b'{"enabled": "yes"}',
            ),
            "body",
        ),
    ],
    ids=[
        "dot-dot",
        "method",
        "path-pattern",
        "query-range",
        "query-unknown",
        "header-unknown",
        "traceparent",
        "no-key",
        "bad-key",
        "body-missing-field",
        "body-wrong-type",
    ],
)
def test_the_conformance_check_itself_refuses_what_the_contract_forbids(
    contract: Contract, sent: SentRequest, fragment: str
) -> None:
    """The checker must be able to fail, or the two tests above prove nothing."""
    good = {"authorization": f"Bearer {TOKEN}", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    headers = {**good, **sent.headers}
    if sent.body:
        headers["content-type"] = "application/json"
    with pytest.raises(AssertionError, match=fragment):
        contract.check_request(
            SentRequest(sent.method, sent.path, sent.query, headers, sent.body), token=TOKEN
        )
