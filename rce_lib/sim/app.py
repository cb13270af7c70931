"""HTTP routes of the simulator (aiohttp.web): the contract's /api/v1 and the /sim admin API.

One middleware does what every request shares, in this order: latency and connection
drop faults, bearer auth, Retry-After violation check, injected 500/503, advance(now),
rate limits; then the handler; then counters, Retry-After bookkeeping and the write of
whatever state changed (before the response leaves, so kill -9 never loses an answered
mutation).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from rce_lib.api.models import (
    HOST_ID_RE,
    IDEMPOTENCY_KEY_RE,
    SDDC_ID_RE,
    SNAPSHOT_ID_RE,
    TASK_ID_RE,
    VERSION_RE,
    MaintenanceWindow,
)
from rce_lib.sim.limits import TokenBucket, retry_after_header, retry_after_seconds
from rce_lib.sim.model import SddcRec, TaskRec
from rce_lib.sim.ops import Call, Ops
from rce_lib.sim.problems import ApiProblem, problem_response
from rce_lib.sim.state import FleetState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LABEL_RE = re.compile(r"^[a-z0-9_.-]+=[A-Za-z0-9_.-]+$")
TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
TASK_TYPES = (
    "PRECHECK",
    "SNAPSHOT",
    "UPGRADE_VCENTER",
    "UPGRADE_NSX",
    "HOST_MAINTENANCE",
    "UPGRADE_HOST",
    "ROLLBACK",
)
TASK_STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED")
# Operations whose contract lists 400; the others answer bad input with 422.
OPS_WITH_400 = ("prechecks", "components")  # startHostUpgrade lists no 400
EXTRA = {"x_sim_extra": {"note": "unknown field injected by the simulator", "n": 1}}
RA_MAX = 50_000


def _route_service(request: web.Request) -> str:
    """Which service's rate bucket a mutating call draws from."""
    path = request.path
    if "/components/" in path:
        return "nsx" if request.match_info.get("component") == "nsx" else "vcenter"
    if "/hosts/" in path:
        return "esx"
    return "vcenter"


def _add_extra(body: Any) -> Any:
    if isinstance(body, dict):
        body.update(json.loads(json.dumps(EXTRA)))
        for key in ("items", "hosts"):
            for item in body.get(key) or []:
                if isinstance(item, dict):
                    item.update(json.loads(json.dumps(EXTRA)))
    return body


class SimApp:
    """Holds the state and builds the aiohttp application."""

    def __init__(self, state: FleetState) -> None:
        self.state = state
        self.ops = Ops(state)
        self.config = state.config
        self.token = state.config.token
        self.buckets: dict[str, TokenBucket] = {
            s: TokenBucket(b) for s, b in state.config.mutation_rate.items()
        }
        self.read_bucket = TokenBucket(state.config.read_rate)
        self.rng = random.Random(state.config.seed + 7)
        # Retry-After given per request identity: key -> (allowed_at, header value, given_at)
        self.retry_after_given: dict[str, tuple[float, str, float]] = {}

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=1024 * 1024)
        r = app.router
        r.add_get("/api/v1/sddcs", self.list_sddcs)
        r.add_get("/api/v1/sddcs/{sddc_id}", self.get_sddc)
        r.add_get("/api/v1/sddcs/{sddc_id}/health", self.get_health)
        r.add_get("/api/v1/sddcs/{sddc_id}/tasks", self.list_tasks)
        r.add_post("/api/v1/sddcs/{sddc_id}/prechecks", self.post_precheck)
        r.add_post("/api/v1/sddcs/{sddc_id}/snapshots", self.post_snapshot)
        r.add_post("/api/v1/sddcs/{sddc_id}/components/{component}/upgrade", self.post_component)
        r.add_put("/api/v1/sddcs/{sddc_id}/hosts/{host_id}/maintenance", self.put_maintenance)
        r.add_post("/api/v1/sddcs/{sddc_id}/hosts/{host_id}/upgrade", self.post_host_upgrade)
        r.add_post("/api/v1/sddcs/{sddc_id}/rollback", self.post_rollback)
        r.add_get("/api/v1/tasks/{task_id}", self.get_task)
        r.add_get("/api/v1/releases/{version}", self.get_release)
        r.add_get("/sim/ping", self.ping)
        r.add_get("/sim/counters", self.get_counters)
        r.add_post("/sim/reset-counters", self.reset_counters)
        r.add_get("/sim/faults", self.get_faults)
        r.add_post("/sim/faults", self.post_faults)
        r.add_delete("/sim/faults", self.delete_faults)
        r.add_post("/sim/drift", self.post_drift)
        r.add_post("/sim/sddcs/{sddc_id}/maintenance_window", self.post_maintenance_window)
        r.add_get("/sim/state", self.get_state)
        r.add_get("/sim/tasks/{task_id}", self.get_task_record)
        return app

    # ================================================================ middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        is_api = request.path.startswith("/api/")
        mutating = is_api and request.method in ("POST", "PUT")
        service = _route_service(request) if mutating else "read"
        status: int | str = "dropped"
        try:
            response = await self._guarded(request, handler, is_api, mutating, service)
            status = response.status
            return response
        finally:
            self.state.counters.request(request.method, route, status)
            self.state.counters_dirty = True
            if mutating:
                self.state.counters.mutating_calls += 1

    async def _guarded(
        self, request: web.Request, handler: Handler, is_api: bool, mutating: bool, service: str
    ) -> web.StreamResponse:
        identity: str | None = None
        try:
            fault = None
            if is_api:
                delay = self.state.faults.latency_s()
                if delay:
                    await asyncio.sleep(delay)
                fault = self.state.faults.request_fault(mutating)
                if fault == "drop":
                    self.state.counters.injected["drop"] += 1
                    return self._drop(request)
            if request.path != "/sim/ping":
                self._auth(request)
            now = time.time()
            if is_api:
                identity = self._identity(request, mutating)
                self._check_retry_after(request, identity, now)
                self._storm(now, service)
                self._injected(fault, service)
                self.state.advance(now)
                self._rate_limit(mutating, service, now)
            response = await handler(request)
        except ApiProblem as problem:
            response = self._problem(problem, service, request)
        except web.HTTPException as exc:
            code = "NOT_FOUND" if exc.status == 404 else "METHOD_NOT_ALLOWED" if exc.status == 405 else "HTTP"
            response = self._problem(ApiProblem(exc.status, code, exc.reason or "error"), service, request)
        if identity is not None:
            self._remember_retry_after(identity, response)
        if self.state.dirty.any_state():
            self.state.flush()
        return response

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the connection without an answer, like a crashing load balancer."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError

    def _auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            raise ApiProblem(
                401,
                "UNAUTHORIZED",
                "missing or bad bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="sddc"'},
            )

    def _storm(self, now: float, service: str) -> None:
        """Inside a 429 storm window every API request is refused until the storm ends."""
        retry_after = self.state.faults.storm_retry_after(now)
        if retry_after is not None:
            self.state.counters.injected["storm"] += 1
            raise ApiProblem(429, "RATE_LIMITED", "injected 429 storm", retry_after=retry_after)

    def _injected(self, fault: str | None, service: str) -> None:
        if fault == "error":
            self.state.counters.injected["error"] += 1
            raise ApiProblem(500, "INTERNAL_ERROR", "injected server error")
        if fault == "throttle":
            self.state.counters.injected["throttle"] += 1
            raise ApiProblem(
                503,
                "SERVICE_UNAVAILABLE",
                "injected throttling",
                retry_after=self.state.faults.faults.throttle_retry_after_s,
            )

    def _rate_limit(self, mutating: bool, service: str, now: float) -> None:
        if not self.config.rate_limits_enabled:
            return
        bucket = self.buckets.get(service) if mutating else self.read_bucket
        if bucket is None:
            return
        wait = bucket.take(now)
        if wait > 0:
            raise ApiProblem(
                429, "RATE_LIMITED", f"over the {service} request rate", retry_after=retry_after_seconds(wait)
            )

    def _problem(self, problem: ApiProblem, service: str, request: web.Request | None = None) -> web.Response:
        if request is not None and self.state.faults.faults.echo_auth:
            # a leaky server: the request's credentials come back in the error's text
            echoed = request.headers.get("Authorization", "")
            problem.detail = f"{problem.detail} (request Authorization: {echoed})"
            self.state.counters.injected["echo_auth"] += 1
        if problem.retry_after is not None:
            fmt = self.state.faults.faults.retry_after_format or self.config.retry_after_format
            problem.headers["Retry-After"] = retry_after_header(
                problem.retry_after, time.time(), fmt, self.rng
            )
        if problem.status == 429:
            self.state.counters.http_429[problem.service or service] += 1
        elif problem.status == 503:
            self.state.counters.http_503[problem.service or service] += 1
        extra = EXTRA if self.state.faults.faults.extra_fields else None
        return problem_response(problem, extra)

    # ---------------------------------------------------------------- Retry-After bookkeeping

    def _identity(self, request: web.Request, mutating: bool) -> str:
        """The same request again: same Idempotency-Key for mutations, else method+path+token(+trace)."""
        key = request.headers.get("Idempotency-Key")
        if mutating and key:
            return f"key:{key}"
        match = TRACEPARENT_RE.match(request.headers.get("traceparent", "").strip().lower())
        trace = match.group(1) if match else ""
        token = hashlib.sha256(request.headers.get("Authorization", "").encode()).hexdigest()[:12]
        return f"{request.method} {request.path_qs} {token} {trace}"

    def _check_retry_after(self, request: web.Request, identity: str, now: float) -> None:
        given = self.retry_after_given.get(identity)
        if given is None:
            return
        allowed_at, header, given_at = given
        if now < allowed_at - self.config.retry_after_tolerance_s:
            self.state.counters.violation(
                {
                    "at": now,
                    "method": request.method,
                    "path": request.path_qs,
                    "identity": identity,
                    "retry_after": header,
                    "waited_s": round(now - given_at, 3),
                    "early_by_s": round(allowed_at - now, 3),
                }
            )
        else:
            del self.retry_after_given[identity]

    def _remember_retry_after(self, identity: str, response: web.StreamResponse) -> None:
        if response.status not in (429, 503) or "Retry-After" not in response.headers:
            return
        header = response.headers["Retry-After"]
        now = time.time()
        allowed_at = now + int(header) if header.isdigit() else parsedate_to_datetime(header).timestamp()
        if len(self.retry_after_given) >= RA_MAX:
            self.retry_after_given = {k: v for k, v in self.retry_after_given.items() if v[0] > now}
        self.retry_after_given[identity] = (allowed_at, header, now)

    # ================================================================ helpers

    def _json(self, body: Any, status: int = 200) -> web.Response:
        if self.state.faults.faults.extra_fields:
            body = _add_extra(body)
        return web.json_response(body, status=status)

    def _sddc_param(self, request: web.Request, *, must_exist: bool = True) -> SddcRec | str:
        sddc_id = request.match_info["sddc_id"]
        if not SDDC_ID_RE.match(sddc_id):
            raise ApiProblem(404, "NOT_FOUND", f"no SDDC can have the id {sddc_id!r}")
        if sddc_id in self.state.faults.faults.forbidden_sddc_ids:
            raise ApiProblem(403, "FORBIDDEN", f"this token has no rights on {sddc_id}")
        sddc = self.state.live_sddc(sddc_id)
        if sddc is None:
            if must_exist:
                raise ApiProblem(404, "NOT_FOUND", f"SDDC {sddc_id} not found")
            return sddc_id
        return sddc

    def _sddc(self, request: web.Request) -> SddcRec:
        sddc = self._sddc_param(request)
        assert isinstance(sddc, SddcRec)
        return sddc

    @staticmethod
    def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiProblem(400, "INVALID_PARAMETER", f"{name} must be an integer") from None
        if not low <= value <= high:
            raise ApiProblem(400, "INVALID_PARAMETER", f"{name} must be between {low} and {high}")
        return value

    @staticmethod
    def _trace_id(request: web.Request) -> str | None:
        match = TRACEPARENT_RE.match(request.headers.get("traceparent", "").strip().lower())
        if match is None or match.group(1) == "0" * 32:
            return None
        return match.group(1)

    @staticmethod
    def _parent_span_id(request: web.Request) -> str | None:
        match = TRACEPARENT_RE.match(request.headers.get("traceparent", "").strip().lower())
        if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
            return None
        return match.group(2)

    # ================================================================ reads

    async def list_sddcs(self, request: web.Request) -> web.Response:
        q = request.query
        limit = self._int_query(request, "limit", 100, 1, 500)
        labels: list[tuple[str, str]] = []
        for raw in q.getall("label", []):
            if not LABEL_RE.match(raw):
                raise ApiProblem(400, "INVALID_PARAMETER", f"label {raw!r} is not key=value")
            key, _, value = raw.partition("=")
            labels.append((key, value))
        start = 0
        cursor = q.get("cursor")
        if cursor:
            try:
                after = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
            except (ValueError, UnicodeDecodeError):
                raise ApiProblem(400, "INVALID_CURSOR", "cursor is not one this API gave out") from None
            if not SDDC_ID_RE.match(after):
                raise ApiProblem(400, "INVALID_CURSOR", "cursor is not one this API gave out")
            start = bisect.bisect_right(self.state.sorted_ids, after)
        region, version = q.get("region"), q.get("version")
        items: list[dict[str, Any]] = []
        next_cursor: str | None = None
        ids = self.state.sorted_ids
        for index in range(start, len(ids)):
            sddc = self.state.sddcs[ids[index]]
            if (region and sddc.region != region) or (version and sddc.version != version):
                continue
            if any(sddc.labels.get(k) != v for k, v in labels):
                continue
            if len(items) == limit:
                next_cursor = base64.urlsafe_b64encode(items[-1]["id"].encode()).decode().rstrip("=")
                break
            items.append(self.state.summary_view(sddc))
        return self._json({"items": items, "next_cursor": next_cursor})

    async def get_sddc(self, request: web.Request) -> web.Response:
        sddc = self._sddc(request)
        view = self.state.sddc_view(sddc)
        if sddc.id in self.state.faults.faults.malformed_sddc_ids:  # injected contract violation
            view["version"] = "latest"
            del view["hosts"]
        return self._json(view)

    async def get_health(self, request: web.Request) -> web.Response:
        sddc = self._sddc(request)
        window = self._int_query(request, "window_s", 300, 30, 86400)
        # a new reading every second, the same within one: a rolling window seen at that instant
        rng = random.Random(f"{self.config.seed}:{sddc.id}:{int(time.time())}")
        engine = self.state.faults
        faults = engine.faults
        alarms: list[str] = []
        if engine.unhealthy(sddc.id, sddc.version):
            status, error_rate, p95 = "UNHEALTHY", 0.2 + rng.random() * 0.15, 1800 + rng.random() * 600
            alarms = ["ERROR_RATE_HIGH", "LATENCY_HIGH"]
        else:
            status, error_rate, p95 = "HEALTHY", 0.001 + rng.random() * 0.009, 80 + rng.random() * 170
            if faults.degraded_release is not None and faults.degraded_release == sddc.version:
                error_rate += faults.degraded_error_rate
                p95 += faults.degraded_latency_ms
            if any(h.state == "DISCONNECTED" for h in sddc.hosts):
                status, alarms = "DEGRADED", ["HOST_DISCONNECTED"]
        body: dict[str, Any] = {
            "sddc_id": sddc.id,
            "status": status,
            "window_s": window,
            "error_rate": round(min(error_rate, 1.0), 4),
            "p95_latency_ms": round(p95, 1),
            "alarms": alarms,
        }
        if sddc.id in faults.malformed_health_sddc_ids:
            del body["error_rate"]
        return self._json(body)

    async def list_tasks(self, request: web.Request) -> web.Response:
        sddc = self._sddc(request)
        limit = self._int_query(request, "limit", 50, 1, 200)
        task_type, status = request.query.get("type"), request.query.get("status")
        if task_type is not None and task_type not in TASK_TYPES:
            raise ApiProblem(400, "INVALID_PARAMETER", f"unknown task type {task_type!r}")
        if status is not None and status not in TASK_STATUSES:
            raise ApiProblem(400, "INVALID_PARAMETER", f"unknown task status {status!r}")
        now = time.time()
        items: list[dict[str, Any]] = []
        for task_id in reversed(self.state.tasks_by_sddc.get(sddc.id, [])):
            task = self.state.tasks[task_id]
            if task_type and task.type != task_type:
                continue
            view = self.state.task_view(task, now)
            if status and view["status"] != status:
                continue
            items.append(view)
            if len(items) >= limit:
                break
        return self._json({"items": items})

    async def get_task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        task = self.state.tasks.get(task_id) if TASK_ID_RE.match(task_id) else None
        if task is None:
            raise ApiProblem(404, "NOT_FOUND", f"task {task_id} not found")
        if task.sddc_id in self.state.faults.faults.forbidden_sddc_ids:
            raise ApiProblem(403, "FORBIDDEN", f"this token has no rights on {task.sddc_id}")
        self.state.counters.task_polls[task.type] += 1
        return self._json(self.state.task_view(task, time.time()))

    async def get_release(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        rel = self.state.releases.get(version) if VERSION_RE.match(version) else None
        if rel is None:
            raise ApiProblem(404, "NOT_FOUND", f"release {version} not found")
        return self._json(self.state.release_view(rel))

    # ================================================================ mutations

    async def _mutation(
        self,
        request: web.Request,
        op: str,
        validate: Callable[[dict[str, Any]], None],
        start: Callable[[Call, SddcRec, dict[str, Any]], TaskRec],
    ) -> web.Response:
        """Shared flow: path, key and body checks, idempotent replay, then the operation."""
        bad = 400 if op in OPS_WITH_400 else 422
        sddc_or_id = self._sddc_param(request, must_exist=False)
        for name in ("host_id",):
            value = request.match_info.get(name)
            if value is not None and not HOST_ID_RE.match(value):
                raise ApiProblem(404, "NOT_FOUND", f"no host can have the id {value!r}")
        key = request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
            raise ApiProblem(
                bad, "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1-128 of [A-Za-z0-9._:-]"
            )
        body = await self._body(request, bad)
        try:
            validate(body)
        except ApiProblem as problem:
            problem.status = bad  # the contract lists 400 for some operations, 422 for others
            raise
        now = time.time()
        self.state.advance(now)  # reading the body may have taken a while
        fingerprint = hashlib.sha256(
            f"{request.method} {request.path}\n{json.dumps(body, sort_keys=True)}".encode()
        ).hexdigest()
        if key is not None and key in self.state.idem:
            rec = self.state.idem[key]
            if rec.fingerprint != fingerprint:
                raise ApiProblem(
                    422, "IDEMPOTENCY_KEY_REUSED", f"Idempotency-Key {key} was used for a different request"
                )
            return self._json(self.state.task_view(self.state.tasks[rec.task_id], now), 200)
        if not isinstance(sddc_or_id, SddcRec):
            raise ApiProblem(404, "NOT_FOUND", f"SDDC {sddc_or_id} not found")
        call = Call(
            request.method, request.path, now, key, self._trace_id(request), self._parent_span_id(request)
        )
        task = start(call, sddc_or_id, body)
        if key is not None:
            self.state.bind_key(key, fingerprint, task, now)
        return self._json(self.state.task_view(task, now), 202)

    @staticmethod
    async def _body(request: web.Request, bad: int) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiProblem(400 if bad == 400 else 422, "INVALID_BODY", "body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiProblem(bad, "INVALID_BODY", "body must be a JSON object")
        return body

    @staticmethod
    def _need_version(body: dict[str, Any]) -> None:
        value = body.get("target_version")
        if not isinstance(value, str) or not VERSION_RE.match(value):
            raise ApiProblem(400, "INVALID_BODY", "target_version (like 1.26.0) is required")

    async def post_precheck(self, request: web.Request) -> web.Response:
        return await self._mutation(
            request,
            "prechecks",
            self._need_version,
            lambda c, s, b: self.ops.start_precheck(c, s, b["target_version"]),
        )

    async def post_snapshot(self, request: web.Request) -> web.Response:
        def validate(body: dict[str, Any]) -> None:
            label = body.get("label")
            if label is not None and (not isinstance(label, str) or len(label) > 128):
                raise ApiProblem(422, "INVALID_BODY", "label must be a string of at most 128 characters")

        return await self._mutation(
            request, "snapshots", validate, lambda c, s, b: self.ops.start_snapshot(c, s, b.get("label"))
        )

    async def post_component(self, request: web.Request) -> web.Response:
        component = request.match_info["component"]
        if component not in ("vcenter", "nsx"):
            raise ApiProblem(404, "NOT_FOUND", f"no component {component!r}; use vcenter or nsx")
        return await self._mutation(
            request,
            "components",
            self._need_version,
            lambda c, s, b: self.ops.start_component_upgrade(c, s, component, b["target_version"]),
        )

    async def put_maintenance(self, request: web.Request) -> web.Response:
        host_id = request.match_info["host_id"]

        def validate(body: dict[str, Any]) -> None:
            if not isinstance(body.get("enabled"), bool):
                raise ApiProblem(422, "INVALID_BODY", "enabled (true or false) is required")

        return await self._mutation(
            request,
            "hosts_maintenance",
            validate,
            lambda c, s, b: self.ops.set_maintenance(c, s, host_id, b["enabled"]),
        )

    async def post_host_upgrade(self, request: web.Request) -> web.Response:
        host_id = request.match_info["host_id"]
        return await self._mutation(
            request,
            "hosts_upgrade",
            self._need_version,
            lambda c, s, b: self.ops.start_host_upgrade(c, s, host_id, b["target_version"]),
        )

    async def post_rollback(self, request: web.Request) -> web.Response:
        def validate(body: dict[str, Any]) -> None:
            value = body.get("snapshot_id")
            if not isinstance(value, str) or not SNAPSHOT_ID_RE.match(value):
                raise ApiProblem(422, "INVALID_BODY", "snapshot_id is required")

        return await self._mutation(
            request, "rollback", validate, lambda c, s, b: self.ops.start_rollback(c, s, b["snapshot_id"])
        )

    # ================================================================ admin

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def get_counters(self, request: web.Request) -> web.Response:
        self.state.advance(time.time())
        return web.json_response(self.state.counters.dump(self.state.current_concurrency()))

    async def reset_counters(self, request: web.Request) -> web.Response:
        self.state.advance(time.time())
        current = self.state.current_concurrency()
        self.state.counters.reset(current)
        self.retry_after_given.clear()
        return web.json_response(self.state.counters.dump(current))

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.faults.faults.model_dump())

    async def post_faults(self, request: web.Request) -> web.Response:
        body = await self._body(request, 422)
        try:
            faults = self.state.faults.merge(body)
        except ValidationError as exc:
            raise ApiProblem(422, "INVALID_FAULTS", str(exc)) from None
        self.state.dirty.meta = True
        return web.json_response(faults.model_dump())

    async def delete_faults(self, request: web.Request) -> web.Response:
        faults = self.state.faults.merge({"reset": True})
        self.state.dirty.meta = True
        return web.json_response(faults.model_dump())

    async def post_drift(self, request: web.Request) -> web.Response:
        now = time.time()
        self.state.advance(now)
        body = await self._body(request, 422)
        return web.json_response(self.ops.drift(body))

    async def post_maintenance_window(self, request: web.Request) -> web.Response:
        """Set (or clear, with null) an SDDC's maintenance window, as its customer would:
        body {"maintenance_window": {"day_of_week": 5, "start_hour_utc": 2, "duration_hours": 6}}.
        Windows are real UTC wall time, whatever the time scale; answers the SDDC as the API shows it."""
        self.state.advance(time.time())
        sddc = self._sddc(request)
        body = await self._body(request, 422)
        if "maintenance_window" not in body:
            raise ApiProblem(422, "INVALID_WINDOW", "maintenance_window (an object or null) is required")
        raw = body["maintenance_window"]
        window = None
        if raw is not None:
            try:
                window = MaintenanceWindow.model_validate(raw).model_dump()
            except ValidationError as exc:
                raise ApiProblem(422, "INVALID_WINDOW", str(exc)) from None
        sddc.maintenance_window = window
        self.state.dirty.sddcs.add(sddc.id)
        return web.json_response(self.state.sddc_view(sddc))

    async def get_task_record(self, request: web.Request) -> web.Response:
        """A task as the simulator holds it, with what the contract does not show (the
        `traceparent` span id that created it, its idempotency key, planned faults)."""
        task = self.state.tasks.get(request.match_info["task_id"])
        if task is None:
            raise ApiProblem(404, "NOT_FOUND", f"task {request.match_info['task_id']} not found")
        return web.json_response(task.to_row())

    async def get_state(self, request: web.Request) -> web.Response:
        now = time.time()
        self.state.advance(now)
        return web.json_response(self.state.dump(now))
