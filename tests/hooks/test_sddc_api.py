"""SddcApiHook against a real local HTTP server (scripted answers, nothing patched)."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import pytest
from _fake_api import TOKEN, FakeApi, Reply, health_json, problem, sddc_json, task_json
from _fake_clock import FakeClock

from rce_lib.api.tracing import trace_id_for
from rce_lib.errors import ApiError, ContractViolation, InvalidIdentifier, ParamsError, Reason, ThrottledError
from rce_lib.hooks.retry import RetryPolicy
from rce_lib.hooks.sddc_api import SddcApiHook

KEY = "rce:precheck:sddc-1:-:g0:0123456789abcdef01234567"
TRACE = trace_id_for("rollout", "w1", "sddc-1", "run-1")
FAST = RetryPolicy("fast", attempts=3, deadline_s=100.0, base_s=0.1, cap_s=0.5)


@pytest.fixture
def hook(connect: Any, clock: FakeClock) -> SddcApiHook:
    return SddcApiHook(trace_id=TRACE, sleep=clock.sleep, clock=clock, reads=FAST, mutations=FAST)


def test_reads_send_bearer_accept_and_a_fresh_traceparent(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(Reply(200, sddc_json()), Reply(200, sddc_json()))
    sddc = hook.get_sddc("sddc-1")
    hook.get_sddc("sddc-1")
    assert sddc.id == "sddc-1" and sddc.ready and sddc.hosts[0].id == "h-1"
    first, _second = api.seen
    assert (first.method, first.path) == ("GET", "/api/v1/sddcs/sddc-1")
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["Accept"] == "application/json"
    spans = []
    for seen in api.seen:
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", seen.headers["traceparent"])
        assert m and m.group(1) == TRACE
        spans.append(m.group(2))
    assert spans[0] != spans[1]
    assert "Idempotency-Key" not in first.headers


def test_connection_extras_are_settings_never_headers(api: FakeApi, connect: Any, clock: FakeClock) -> None:
    connect(verify=False, ca_bundle="/nonexistent/ca.pem", max_body_bytes=4096, custom="leak-me")
    api.script(Reply(200, sddc_json()))
    SddcApiHook(sleep=clock.sleep, clock=clock).get_sddc("sddc-1")
    sent = {k.lower(): v for k, v in api.seen[0].headers.items()}
    for extra in ("verify", "ca_bundle", "connect_timeout", "read_timeout", "max_body_bytes", "custom"):
        assert extra not in sent
    assert "leak-me" not in json.dumps(sent)


def test_list_sddcs_follows_the_cursor_and_sends_filters(api: FakeApi, hook: SddcApiHook) -> None:
    page1 = {"items": [sddc_json("a-1"), sddc_json("a-2")], "next_cursor": "c2"}
    page2 = {"items": [sddc_json("a-3")], "next_cursor": None}
    api.script(Reply(200, page1), Reply(200, page2))
    got = list(
        hook.list_sddcs(region="eu-west-1", version="1.2.0", labels={"tier": "gold", "a": "b"}, page_size=2)
    )
    assert [s.id for s in got] == ["a-1", "a-2", "a-3"]
    assert api.seen[0].query == [
        ("limit", "2"),
        ("region", "eu-west-1"),
        ("version", "1.2.0"),
        ("label", "a=b"),
        ("label", "tier=gold"),
    ]
    assert ("cursor", "c2") in api.seen[1].query


def test_a_repeating_cursor_is_a_contract_violation(api: FakeApi, hook: SddcApiHook) -> None:
    page = {"items": [], "next_cursor": "same"}
    api.script(Reply(200, page), Reply(200, page))
    with pytest.raises(ContractViolation):
        list(hook.list_sddcs())


def test_other_reads_parse_into_models(api: FakeApi, hook: SddcApiHook) -> None:
    release = {
        "version": "1.3.0",
        "components": {"vcenter": "a", "nsx": "b", "esx": "c"},
        "upgrade_from": ["1.2.0"],
    }
    api.script(
        Reply(200, health_json()),
        Reply(200, {"items": [task_json(status="WEIRD_NEW_STATUS")]}),
        Reply(200, task_json("t-9", status="SUCCEEDED")),
        Reply(200, release),
    )
    assert hook.get_health("sddc-1", window_s=60).status.value == "HEALTHY"
    (task,) = hook.list_sddc_tasks("sddc-1", type="PRECHECK", status="RUNNING", limit=5)
    assert not task.terminal  # unknown status is not terminal
    assert hook.get_task("t-9").terminal
    assert hook.get_release("1.3.0").upgrade_from == ["1.2.0"]
    assert api.seen[0].query == [("window_s", "60")]
    assert api.seen[1].query == [("limit", "5"), ("type", "PRECHECK"), ("status", "RUNNING")]


def test_start_sends_idempotency_key_and_body_and_reports_created(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(Reply(202, task_json()))
    result = hook.start_precheck("sddc-1", "1.3.0", key=KEY)
    assert result.outcome == "created" and result.task.id == "t-1"
    seen = api.seen[0]
    assert (seen.method, seen.path) == ("POST", "/api/v1/sddcs/sddc-1/prechecks")
    assert seen.headers["Idempotency-Key"] == KEY
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["traceparent"].startswith(f"00-{TRACE}-")
    assert seen.json() == {"target_version": "1.3.0"}


def test_replayed_key_reports_replayed(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(Reply(200, task_json(status="FAILED")))
    assert hook.start_precheck("sddc-1", "1.3.0", key=KEY).outcome == "replayed"


@pytest.mark.parametrize(
    ("call", "method", "path", "body", "task_type"),
    [
        (
            lambda h: h.start_snapshot("sddc-1", key=KEY, label="pre"),
            "POST",
            "snapshots",
            {"label": "pre"},
            "SNAPSHOT",
        ),
        (
            lambda h: h.start_component_upgrade("sddc-1", "nsx", "1.3.0", key=KEY),
            "POST",
            "components/nsx/upgrade",
            {"target_version": "1.3.0"},
            "UPGRADE_NSX",
        ),
        (
            lambda h: h.set_host_maintenance("sddc-1", "h-1", True, key=KEY),
            "PUT",
            "hosts/h-1/maintenance",
            {"enabled": True},
            "HOST_MAINTENANCE",
        ),
        (
            lambda h: h.start_host_upgrade("sddc-1", "h-1", "1.3.0", key=KEY),
            "POST",
            "hosts/h-1/upgrade",
            {"target_version": "1.3.0"},
            "UPGRADE_HOST",
        ),
        (
            lambda h: h.start_rollback("sddc-1", "snap-1", key=KEY),
            "POST",
            "rollback",
            {"snapshot_id": "snap-1"},
            "ROLLBACK",
        ),
    ],
)
def test_every_mutation_hits_its_route(
    api: FakeApi, hook: SddcApiHook, call: Any, method: str, path: str, body: dict[str, Any], task_type: str
) -> None:
    api.script(Reply(202, task_json(type_=task_type)))
    assert call(hook).outcome == "created"
    seen = api.seen[0]
    assert (seen.method, seen.path) == (method, f"/api/v1/sddcs/sddc-1/{path}")
    assert seen.json() == body
    assert seen.headers["Idempotency-Key"] == KEY


def test_operation_in_progress_adopts_the_existing_task(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(
        problem(409, "OPERATION_IN_PROGRESS", existing_task_id="t-77"),
        Reply(200, task_json("t-77", status="RUNNING")),
    )
    result = hook.start_precheck("sddc-1", "1.3.0", key=KEY)
    assert result.outcome == "adopted" and result.task.id == "t-77"
    assert [(s.method, s.path) for s in api.seen] == [
        ("POST", "/api/v1/sddcs/sddc-1/prechecks"),
        ("GET", "/api/v1/tasks/t-77"),
    ]


def test_adopting_a_task_of_another_type_is_refused(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(
        problem(409, "OPERATION_IN_PROGRESS", existing_task_id="t-77"),
        Reply(200, task_json("t-77", type_="ROLLBACK")),
    )
    with pytest.raises(ContractViolation):
        hook.start_precheck("sddc-1", "1.3.0", key=KEY)


def test_an_invalid_existing_task_id_is_never_put_in_a_url(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(problem(409, "OPERATION_IN_PROGRESS", existing_task_id="../../sddcs"))
    with pytest.raises(ContractViolation):
        hook.start_precheck("sddc-1", "1.3.0", key=KEY)
    assert len(api.seen) == 1


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (409, "COMPONENT_ORDER", Reason.CONFLICT),
        (409, "ALREADY_AT_VERSION", Reason.CONFLICT),
        (409, "CLUSTER_CAPACITY", Reason.CONFLICT),
        (409, "HOST_NOT_IN_MAINTENANCE", Reason.CONFLICT),
        (422, "UPGRADE_PATH_NOT_SUPPORTED", Reason.UPGRADE_PATH_NOT_SUPPORTED),
        (422, "IDEMPOTENCY_KEY_REUSED", Reason.API_ERROR),
        (400, "BAD_REQUEST", Reason.API_ERROR),
        (401, None, Reason.AUTH_FAILED),
        (403, None, Reason.FORBIDDEN),
        (404, "NOT_FOUND", Reason.NOT_FOUND),
    ],
)
def test_problems_raise_api_error_with_code_and_reason(
    api: FakeApi, hook: SddcApiHook, status: int, code: str | None, reason: Reason
) -> None:
    api.script(problem(status, code))
    with pytest.raises(ApiError) as info:
        hook.start_component_upgrade("sddc-1", "vcenter", "1.3.0", key=KEY)
    err = info.value
    assert (err.status, err.code, err.reason) == (status, code, reason)
    assert not isinstance(err, ThrottledError)
    assert len(api.seen) == 1  # never retried


def test_throttling_waits_the_retry_after_then_succeeds(
    api: FakeApi, hook: SddcApiHook, clock: FakeClock
) -> None:
    api.script(
        Reply(
            503, {"title": "busy", "status": 503, "code": "SERVICE_AT_CAPACITY"}, headers={"Retry-After": "7"}
        ),
        Reply(429, {"title": "slow down", "status": 429}, headers={"Retry-After": "2"}),
        Reply(202, task_json()),
    )
    assert hook.start_precheck("sddc-1", "1.3.0", key=KEY).outcome == "created"
    assert len(api.seen) == 3
    assert {s.headers["Idempotency-Key"] for s in api.seen} == {KEY}
    assert 7 <= clock.sleeps[0] < 8 and 2 <= clock.sleeps[1] < 3


def test_retry_after_as_http_date(api: FakeApi, hook: SddcApiHook, clock: FakeClock) -> None:
    api.script(
        Reply(503, {"title": "busy", "status": 503}, headers={"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"})
    )
    with pytest.raises(ThrottledError) as info:
        hook.get_sddc("sddc-1")
    assert info.value.retry_after is not None and info.value.retry_after > 10**8  # beyond the deadline: defer
    assert clock.sleeps == []
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED


def test_server_errors_are_retried_then_reported_as_budget_spent(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(problem(500), Reply(502, "<html>bad gateway</html>", content_type="text/html"), problem(504))
    with pytest.raises(ApiError) as info:
        hook.get_task("t-1")
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED and info.value.status == 504
    assert len(api.seen) == FAST.attempts


def test_read_timeouts_are_retried(api: FakeApi, connect: Any, clock: FakeClock) -> None:
    connect(read_timeout=0.2)
    api.script(Reply(200, task_json(), delay_s=0.6), Reply(200, task_json()))
    assert SddcApiHook(sleep=clock.sleep, clock=clock, reads=FAST).get_task("t-1").id == "t-1"
    assert len(clock.sleeps) == 1


def test_connection_refused_is_retried_then_budget_spent(
    connect: Any, api: FakeApi, clock: FakeClock
) -> None:
    api.stop()
    with pytest.raises(ApiError) as info:
        SddcApiHook(sleep=clock.sleep, clock=clock, reads=FAST).get_task("t-1")
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED and info.value.status is None
    assert len(clock.sleeps) == FAST.attempts - 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"{not json"),
        Reply(200, b""),
        Reply(200, "<html><body>Login</body></html>", content_type="text/html"),
        Reply(200, {"id": "sddc-1"}),  # missing required fields
        Reply(200, sddc_json(host_count="many")),  # wrong type
        Reply(200, [1, 2, 3]),
        Reply(200, sddc_json("sddc-2")),  # about another SDDC
        Reply(204, b"", content_type=None),
    ],
    ids=["malformed", "empty", "html", "missing", "wrong-type", "array", "other-sddc", "204"],
)
def test_unreadable_answers_are_contract_violations(api: FakeApi, hook: SddcApiHook, reply: Reply) -> None:
    api.script(reply)
    with pytest.raises(ContractViolation) as info:
        hook.get_sddc("sddc-1")
    assert len(str(info.value)) < 600
    assert len(api.seen) == 1  # not retried


@pytest.mark.parametrize("send_length", [True, False], ids=["declared", "streamed"])
def test_huge_bodies_are_refused(api: FakeApi, hook: SddcApiHook, send_length: bool) -> None:
    api.script(Reply(200, b"[" + b"1," * (600 * 1024) + b"1]", send_length=send_length))
    with pytest.raises(ContractViolation, match="larger than 1048576 bytes"):
        hook.get_sddc("sddc-1")


def test_max_body_bytes_comes_from_the_connection(api: FakeApi, connect: Any, clock: FakeClock) -> None:
    connect(max_body_bytes=100)
    api.script(Reply(200, sddc_json()))
    with pytest.raises(ContractViolation):
        SddcApiHook(sleep=clock.sleep, clock=clock).get_sddc("sddc-1")


def test_redirects_are_never_followed(api: FakeApi, hook: SddcApiHook) -> None:
    api.script(
        Reply(302, b"", headers={"Location": f"http://localhost:{api.port}/steal"}), Reply(200, sddc_json())
    )
    with pytest.raises(ContractViolation, match="302"):
        hook.get_sddc("sddc-1")
    assert [s.path for s in api.seen] == ["/api/v1/sddcs/sddc-1"]


def test_a_redirect_body_is_never_read(api: FakeApi, hook: SddcApiHook) -> None:
    huge = b"x" * (8 * 1024 * 1024)
    api.script(
        Reply(307, huge, content_type="text/html", headers={"Location": "/elsewhere"}, send_length=False)
    )
    with pytest.raises(ContractViolation, match="307 redirect refused"):
        hook.start_precheck("sddc-1", "1.3.0", key=KEY)
    assert len(api.seen) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.get_sddc("../tasks/t-1"),
        lambda h: h.get_sddc("SDDC-1"),
        lambda h: h.get_sddc(""),
        lambda h: h.get_sddc("x" * 65),
        lambda h: h.get_sddc("sddc-1?admin=1"),
        lambda h: h.get_sddc("sddc%2f1"),
        lambda h: h.get_sddc("sddc-1\n"),
        lambda h: h.get_task("t/1"),
        lambda h: h.get_release("1.3"),
        lambda h: h.get_health("sddc-1 "),
        lambda h: h.list_sddc_tasks("sddc_1"),
        lambda h: h.list_sddcs(labels={"Bad Key": "v"}),
        lambda h: h.list_sddcs(version="latest"),
        lambda h: h.start_precheck("sddc-1", "1.3.0; rm", key=KEY),
        lambda h: h.start_precheck("sddc-1", "1.3.0", key="has space"),
        lambda h: h.start_precheck("sddc-1", "1.3.0", key="k" * 129),
        lambda h: h.start_component_upgrade("sddc-1", "esx", "1.3.0", key=KEY),
        lambda h: h.set_host_maintenance("sddc-1", "../h", True, key=KEY),
        lambda h: h.start_host_upgrade("sddc-1", "H-1", "1.3.0", key=KEY),
        lambda h: h.start_rollback("sddc-1", "snap/../1", key=KEY),
    ],
)
def test_invalid_identifiers_are_refused_before_any_request(
    api: FakeApi, hook: SddcApiHook, call: Any
) -> None:
    with pytest.raises(InvalidIdentifier):
        call(hook)
    assert api.seen == []


@pytest.mark.parametrize(
    "call",
    [
        lambda h: list(h.list_sddcs(page_size=0)),
        lambda h: h.get_health("sddc-1", window_s=5),
        lambda h: h.list_sddc_tasks("sddc-1", type="NOPE"),
        lambda h: h.list_sddc_tasks("sddc-1", limit=201),
        lambda h: h.start_snapshot("sddc-1", key=KEY, label="x" * 129),
    ],
)
def test_invalid_parameters_are_refused_before_any_request(
    api: FakeApi, hook: SddcApiHook, call: Any
) -> None:
    with pytest.raises(ParamsError):
        call(hook)
    assert api.seen == []


def test_a_connection_without_a_password_fails_as_auth(api: FakeApi, connect: Any) -> None:
    connect(password=None)
    with pytest.raises(ApiError) as info:
        SddcApiHook().get_sddc("sddc-1")
    assert info.value.reason is Reason.AUTH_FAILED
    assert api.seen == []


def test_observer_sees_each_attempt_by_route(api: FakeApi, connect: Any, clock: FakeClock) -> None:
    calls: list[tuple[str, str, int | None, float]] = []
    hook = SddcApiHook(
        sleep=clock.sleep,
        clock=clock,
        reads=FAST,
        on_request=lambda r, s, t: calls.append((r.route, r.method, s, t)),
    )
    api.script(problem(500), Reply(200, task_json("t-5")))
    hook.get_task("t-5")
    assert [c[:3] for c in calls] == [
        ("/api/v1/tasks/{task_id}", "GET", 500),
        ("/api/v1/tasks/{task_id}", "GET", 200),
    ]
    assert all(c[3] >= 0 for c in calls)


def test_a_failing_observer_does_not_fail_the_call(api: FakeApi, connect: Any) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("observer bug")

    api.script(Reply(200, task_json()))
    assert SddcApiHook(on_request=boom).get_task("t-1").id == "t-1"


def test_the_token_never_reaches_logs_or_errors(
    api: FakeApi, hook: SddcApiHook, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"<html>you sent Authorization: Bearer {TOKEN}</html>"
    api.script(
        Reply(500, echo, content_type="text/html"),
        Reply(200, echo, content_type="text/html"),
        problem(403, "FORBIDDEN", detail=f"token {TOKEN} has no rights"),
        Reply(503, {"title": f"busy {TOKEN}", "status": 503}, headers={"Retry-After": "1"}),
        Reply(200, b"{" + TOKEN.encode()),
        Reply(302, b"", headers={"Location": "http://evil.example/"}),
    )
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            try:
                hook.get_sddc("sddc-1")
            except Exception as e:
                errors.append(e)
    assert len(errors) == 4
    texts = [caplog.text, *(str(e) for e in errors), *(repr(e) for e in errors), repr(hook.get_conn().auth)]
    texts += [str(e.__cause__) for e in errors if e.__cause__]
    for text in texts:
        assert TOKEN not in text
    assert "***" in str(errors[0])  # the echoed token was redacted, not just cut off


def test_transport_errors_do_not_carry_the_prepared_request(
    connect: Any, api: FakeApi, clock: FakeClock
) -> None:
    api.stop()
    with pytest.raises(ApiError) as info:
        SddcApiHook(sleep=clock.sleep, clock=clock, reads=FAST).get_task("t-1")
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert all(isinstance(e, ApiError) for e in chain)
    assert "ConnectionError" in str(chain[-1])


def test_observer_sees_the_redirect_status(api: FakeApi, connect: Any) -> None:
    calls: list[tuple[str, str, int | None, float]] = []
    api.script(Reply(302, b"", headers={"Location": "http://evil.example/"}))
    with pytest.raises(ContractViolation):
        SddcApiHook(on_request=lambda r, s, t: calls.append((r.route, r.method, s, t))).get_sddc("sddc-1")
    assert [c[:3] for c in calls] == [("/api/v1/sddcs/{sddc_id}", "GET", 302)]


def test_a_response_that_never_ends_is_cut_at_the_total_deadline(
    api: FakeApi, connect: Any, clock: FakeClock
) -> None:
    """A body trickling a byte at a time never trips the per-read timeout nor (for days) the
    size cap: the whole exchange has a deadline of connect_timeout + read_timeout, as the
    async hook's `ClientTimeout(total=...)`; it is a transient fault, retried, then reported."""
    connect(connect_timeout=0.2, read_timeout=0.4)
    endless = Reply(200, b'{"id": "sddc-1", ', send_length=False, endless_every_s=0.02)
    api.script(endless, endless)
    policy = RetryPolicy("fast", attempts=2, deadline_s=100.0, base_s=0.01, cap_s=0.01)
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        SddcApiHook(sleep=clock.sleep, clock=clock, reads=policy).get_sddc("sddc-1")
    assert time.monotonic() - started < 5
    assert info.value.reason is Reason.RETRY_BUDGET_EXHAUSTED and info.value.status is None
    assert "0.6 s" in str(info.value)
    assert len(api.seen) == 2


def test_a_redirect_to_another_host_is_refused_and_sends_nothing_there(
    api: FakeApi, hook: SddcApiHook
) -> None:
    other = FakeApi().start()
    try:
        api.script(
            Reply(308, b"", headers={"Location": f"http://localhost:{other.port}/api/v1/sddcs/sddc-1"})
        )
        with pytest.raises(ContractViolation, match="308 redirect refused"):
            hook.start_precheck("sddc-1", "1.3.0", key=KEY)
        assert other.seen == [] and len(api.seen) == 1
    finally:
        other.stop()
