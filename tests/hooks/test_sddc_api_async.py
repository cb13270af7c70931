"""SddcApiAsyncHook against a real local HTTP server; driven with asyncio.run (no pytest-asyncio)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from _fake_api import TOKEN, FakeApi, Reply, health_json, problem, sddc_json, task_json
from _fake_clock import FakeClock

from rce_lib.api.tracing import trace_id_for
from rce_lib.errors import ApiError, ContractViolation, InvalidIdentifier, Reason, ThrottledError
from rce_lib.hooks.retry import POLLS, RetryPolicy
from rce_lib.hooks.sddc_api import SddcApiAsyncHook

T = TypeVar("T")
TRACE = trace_id_for("rollout", "w1", "sddc-1", "run-1")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


@pytest.fixture
def hook(connect: Any, clock: FakeClock) -> SddcApiAsyncHook:
    return SddcApiAsyncHook(trace_id=TRACE, sleep=clock.asleep, clock=clock)


def test_get_task_sends_bearer_accept_and_traceparent(api: FakeApi, hook: SddcApiAsyncHook) -> None:
    api.script(Reply(200, task_json("t-3", status="RUNNING", progress_percent=40)))
    task = run(lambda: hook.get_task("t-3"))
    assert task.id == "t-3" and task.progress_percent == 40 and not task.terminal
    seen = api.seen[0]
    assert (seen.method, seen.path) == ("GET", "/api/v1/tasks/t-3")
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Accept"] == "application/json"
    assert re.fullmatch(rf"00-{TRACE}-[0-9a-f]{{16}}-01", seen.headers["traceparent"])


def test_extras_are_not_sent_as_headers(api: FakeApi, connect: Any, clock: FakeClock) -> None:
    connect(verify=False, custom="leak-me")
    api.script(Reply(200, sddc_json()))
    run(lambda: SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_sddc("sddc-1"))
    sent = {k.lower(): v for k, v in api.seen[0].headers.items()}
    assert not {"verify", "custom", "read_timeout", "connect_timeout"} & set(sent)


def test_get_sddc_get_health_and_tasks(api: FakeApi, hook: SddcApiAsyncHook) -> None:
    api.script(Reply(200, sddc_json()), Reply(200, health_json()), Reply(200, {"items": [task_json()]}))

    async def calls() -> tuple[Any, Any, Any]:
        return (
            await hook.get_sddc("sddc-1"),
            await hook.get_health("sddc-1", window_s=120),
            await hook.list_sddc_tasks("sddc-1", status="RUNNING"),
        )

    sddc, health, tasks = run(calls)
    assert sddc.id == "sddc-1" and health.window_s == 300 and tasks[0].id == "t-1"
    assert api.seen[1].query == [("window_s", "120")]


def test_polls_honour_retry_after(api: FakeApi, hook: SddcApiAsyncHook, clock: FakeClock) -> None:
    api.script(
        Reply(503, {"title": "busy", "status": 503}, headers={"Retry-After": "4"}),
        problem(502),
        Reply(200, task_json()),
    )
    assert run(lambda: hook.get_task("t-1")).id == "t-1"
    assert 4 <= clock.sleeps[0] <= 4 + POLLS.throttle_jitter_s
    assert 0 <= clock.sleeps[1] <= POLLS.base_s * 2
    assert len(api.seen) == 3


def test_retry_after_past_the_deadline_raises_throttled(
    api: FakeApi, hook: SddcApiAsyncHook, clock: FakeClock
) -> None:
    api.script(Reply(429, {"title": "slow", "status": 429}, headers={"Retry-After": "3600"}))
    with pytest.raises(ThrottledError) as info:
        run(lambda: hook.get_task("t-1"))
    assert info.value.retry_after == 3600 and clock.sleeps == []


def test_problems_are_not_retried(api: FakeApi, hook: SddcApiAsyncHook) -> None:
    api.script(problem(404, "NOT_FOUND"))
    with pytest.raises(ApiError) as info:
        run(lambda: hook.get_task("t-1"))
    assert (info.value.status, info.value.code, info.value.reason) == (404, "NOT_FOUND", Reason.NOT_FOUND)
    assert len(api.seen) == 1


def test_connection_refused_spends_the_poll_budget(api: FakeApi, connect: Any, clock: FakeClock) -> None:
    api.stop()
    policy = RetryPolicy("p", attempts=3, deadline_s=60.0, base_s=0.1, cap_s=0.2)
    hook = SddcApiAsyncHook(sleep=clock.asleep, clock=clock, policy=policy)
    with pytest.raises(ApiError) as info:
        run(lambda: hook.get_task("t-1"))
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED and len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"{oops"),
        Reply(200, b""),
        Reply(200, "<html>maintenance</html>", content_type="text/html"),
        Reply(200, task_json("t-2")),  # another task than asked
        Reply(200, b"[" + b"1," * (600 * 1024) + b"1]", send_length=False),
        Reply(301, b"", headers={"Location": "http://evil.example/"}),
        Reply(200, task_json("t-1", progress_percent="half")),  # wrong type
        Reply(200, {"id": "t-1"}),  # missing required fields
        Reply(200, [task_json("t-1")]),
        Reply(200, task_json("t-1", created_at="yesterday")),
        Reply(204, b"", content_type=None),
        Reply(200, b"[" + b"1," * (600 * 1024) + b"1]"),  # declared too large
    ],
    ids=[
        "malformed",
        "empty",
        "html",
        "other-task",
        "huge",
        "redirect",
        "wrong-type",
        "missing",
        "array",
        "bad-date",
        "204",
        "huge-declared",
    ],
)
def test_unreadable_answers_are_contract_violations(
    api: FakeApi, hook: SddcApiAsyncHook, reply: Reply
) -> None:
    api.script(reply)
    with pytest.raises(ContractViolation):
        run(lambda: hook.get_task("t-1"))
    assert len(api.seen) == 1


@pytest.mark.parametrize("bad", ["../sddcs", "t 1", "", "t" * 65, "t?x=1"])
def test_invalid_ids_are_refused_before_any_request(api: FakeApi, hook: SddcApiAsyncHook, bad: str) -> None:
    with pytest.raises(InvalidIdentifier):
        run(lambda: hook.get_task(bad))
    with pytest.raises(InvalidIdentifier):
        run(lambda: hook.get_sddc(bad.upper() or "X"))
    assert api.seen == []


def test_the_token_never_reaches_logs_or_errors(
    api: FakeApi, hook: SddcApiAsyncHook, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"<html>Bearer {TOKEN}</html>"
    api.script(Reply(200, echo, content_type="text/html"), problem(401, "AUTH", detail=f"bad token {TOKEN}"))
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):
            try:
                run(lambda: hook.get_task("t-1"))
            except Exception as e:
                errors.append(e)
    assert len(errors) == 2
    for text in [caplog.text, *(str(e) for e in errors), repr(hook._config)]:
        assert TOKEN not in text


def test_no_password_is_an_auth_failure(api: FakeApi, connect: Any) -> None:
    connect(password=None)
    with pytest.raises(ApiError) as info:
        run(lambda: SddcApiAsyncHook().get_task("t-1"))
    assert info.value.reason is Reason.AUTH_FAILED and api.seen == []


def test_an_answer_about_another_sddc_is_a_contract_violation(api: FakeApi, hook: SddcApiAsyncHook) -> None:
    api.script(Reply(200, sddc_json("sddc-2")), Reply(200, health_json("sddc-2")))
    with pytest.raises(ContractViolation):
        run(lambda: hook.get_sddc("sddc-1"))
    with pytest.raises(ContractViolation):
        run(lambda: hook.get_health("sddc-1"))


def test_a_response_that_never_ends_is_cut_at_the_total_deadline(
    api: FakeApi, connect: Any, clock: FakeClock
) -> None:
    connect(connect_timeout=0.2, read_timeout=0.4)
    endless = Reply(200, b'{"id": "t-1", ', send_length=False, endless_every_s=0.02)
    api.script(endless, endless)
    policy = RetryPolicy("p", attempts=2, deadline_s=60.0, base_s=0.01, cap_s=0.01)
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        run(lambda: SddcApiAsyncHook(sleep=clock.asleep, clock=clock, policy=policy).get_task("t-1"))
    assert time.monotonic() - started < 5
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED and len(api.seen) == 2


def test_a_redirect_to_another_host_is_never_followed(api: FakeApi, hook: SddcApiAsyncHook) -> None:
    other = FakeApi().start()
    try:
        api.script(Reply(302, b"", headers={"Location": f"http://localhost:{other.port}/api/v1/tasks/t-1"}))
        with pytest.raises(ContractViolation, match="302 redirect refused"):
            run(lambda: hook.get_task("t-1"))
        assert other.seen == [] and len(api.seen) == 1
    finally:
        other.stop()
