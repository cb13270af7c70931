"""Tracing is off by default (same headers as ever, no provider anywhere) and, with the endpoint
set, exports OTLP/HTTP to it as service `rce`."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.api.tracing import span_id_for, trace_id_for
from rce_lib.hooks import _routes
from rce_lib.hooks.sddc_api import SddcApiHook
from rce_lib.telemetry import tracing

REPO = Path(__file__).resolve().parents[2]
TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")
TRACE_ID = trace_id_for("r", "w", "sddc-0001", "run-1")


def _key(sddc_id: str) -> str:
    parts = KeyParts(rollout="r", wave="w", sddc_id=sddc_id, phase="precheck", target_version="1.26.0")
    return idempotency_key(parts)


def test_without_the_endpoint_nothing_is_set_up_and_requests_carry_a_fresh_span_each(
    no_tracing: None, fleet: Any
) -> None:
    global_provider = trace.get_tracer_provider()
    assert not tracing.enabled() and tracing.configure_from_env() is None

    req = _routes.start_precheck("sddc-0001", "1.26.0", _key("sddc-0001"))
    first, second = _routes.request_headers(req, TRACE_ID), _routes.request_headers(req, TRACE_ID)
    assert set(first) == {"Accept", "traceparent", "Idempotency-Key"}
    m1, m2 = TRACEPARENT_RE.fullmatch(first["traceparent"]), TRACEPARENT_RE.fullmatch(second["traceparent"])
    assert m1 and m2 and m1.group(1) == m2.group(1) == TRACE_ID and m1.group(2) != m2.group(2)

    spans = [tracing.client_span("GET", "/x", trace_id=TRACE_ID, parent_span_id=None, server_address="h")]
    spans.append(tracing.client_span("GET", "/x", trace_id=TRACE_ID, parent_span_id=None, server_address="h"))
    assert all(s.span is None for s in spans) and spans[0].span_id != spans[1].span_id

    sddc_id = next(s["id"] for s in fleet.request("GET", "/api/v1/sddcs").json()["items"])
    hook = SddcApiHook(trace_id=TRACE_ID)
    release = hook.get_release("1.26.0")
    started = hook.start_precheck(sddc_id, release.version, key=_key(sddc_id))
    record = fleet.request("GET", f"/sim/tasks/{started.task.id}").json()
    assert record["trace_id"] == TRACE_ID
    assert re.fullmatch(r"[0-9a-f]{16}", record["parent_span_id"]) and record["parent_span_id"] != "0" * 16
    assert trace.get_tracer_provider() is global_provider  # Airflow's (or OpenTelemetry's default) untouched


def test_importing_the_package_sets_up_nothing_even_with_the_endpoint_set() -> None:
    code = (
        "import rce_lib.operators.base, rce_lib.hooks.sddc_api, rce_lib.triggers.downstream_task\n"
        "from rce_lib.telemetry import tracing\n"
        "from opentelemetry import trace\n"
        "print(tracing._configured, tracing._provider, type(trace.get_tracer_provider()).__name__)\n"
    )
    env = {**os.environ, tracing.ENDPOINT_ENV: "http://127.0.0.1:9/"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.split() == ["False", "None", "ProxyTracerProvider"]


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ],
)
def test_traces_endpoint_appends_the_signal_path_once(base: str, url: str) -> None:
    assert tracing.traces_endpoint(base) == url


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # http.server calls it by this name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.posts.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    _Receiver.posts = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.posts
    server.shutdown()
    server.server_close()


def test_the_endpoint_turns_tracing_on_and_spans_reach_it_as_otlp_http(
    receiver: tuple[str, list[tuple[str, str, bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    url, posts = receiver
    global_provider = trace.get_tracer_provider()
    monkeypatch.setenv(tracing.ENDPOINT_ENV, url)
    previous = tracing.install(None)
    tracing.reset()
    try:
        provider = tracing.configure_from_env()
        assert provider is not None and tracing.enabled()
        parent = span_id_for("sddc", "r", "w", "sddc-0001", "run-1")
        with tracing.task_span(
            "rce.phase precheck",
            trace_id=TRACE_ID,
            parent_span_id=parent,
            attributes={"rce.phase": "precheck"},
        ):
            pass
        tracing.force_flush()
        provider.shutdown()
    finally:
        tracing.install(previous)

    assert [(path, ctype) for path, ctype, _ in posts] == [("/v1/traces", "application/x-protobuf")]
    request = ExportTraceServiceRequest.FromString(posts[0][2])
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "rce"
    (span,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.name == "rce.phase precheck"
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == parent
    assert trace.get_tracer_provider() is global_provider
