"""A real HTTP server on 127.0.0.1:0 that answers from a script: a transport-level fake.

The hooks are exercised end to end (sockets, headers, redirects, body reading), so
nothing in them is patched; each test scripts the answers and reads back what was sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ENDLESS_CAP_S = 20.0
#: Long enough for Airflow's secrets masker (it skips secrets under 5 characters).
TOKEN = "s3cr3t-bearer-token-0123456789"


@dataclass
class Reply:
    status: int = 200
    body: Any = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True
    delay_s: float = 0.0
    #: After the body, keep sending a byte every this many seconds (a response that never
    #: ends), until the client hangs up or ENDLESS_CAP_S has passed.
    endless_every_s: float | None = None

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def problem(status: int, code: str | None = None, **extra: Any) -> Reply:
    body = {"type": "about:blank", "title": f"HTTP {status}", "status": status, "detail": f"{code} happened"}
    if code:
        body["code"] = code
    body.update(extra)
    return Reply(status, body, content_type="application/problem+json")


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeApi:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with api._lock:
                    api.seen.append(
                        Seen(
                            self.command, parts.path, parse_qsl(parts.query), dict(self.headers.items()), body
                        )
                    )
                    reply = api.replies.popleft() if api.replies else problem(500, "UNSCRIPTED")
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.payload()
                self.send_response(reply.status)
                if reply.content_type:
                    self.send_header("Content-Type", reply.content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.send_length:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)
                    if reply.endless_every_s is not None:
                        self._trickle(reply.endless_every_s)

            def _trickle(self, every_s: float) -> None:
                stop = time.monotonic() + ENDLESS_CAP_S
                while time.monotonic() < stop:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(every_s)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def start(self) -> FakeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def task_json(
    task_id: str = "t-1", sddc_id: str = "sddc-1", type_: str = "PRECHECK", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": task_id,
        "sddc_id": sddc_id,
        "type": type_,
        "status": "QUEUED",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    body.update(extra)
    return body


def sddc_json(sddc_id: str = "sddc-1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": sddc_id,
        "org_id": "org-1",
        "region": "eu-west-1",
        "version": "1.2.0",
        "status": "READY",
        "host_count": 1,
        "labels": {"tier": "gold"},
        "components": {"vcenter": "8.0.1", "nsx": "4.1.0"},
        "hosts": [{"id": "h-1", "cluster_id": "c-1", "version": "8.0.1", "state": "CONNECTED"}],
        "some_future_field": {"ignored": True},
    }
    body.update(extra)
    return body


def health_json(sddc_id: str = "sddc-1") -> dict[str, Any]:
    return {
        "sddc_id": sddc_id,
        "status": "HEALTHY",
        "window_s": 300,
        "error_rate": 0.0,
        "p95_latency_ms": 12.5,
    }
