"""SddcApiAsyncHook: the async twin of SddcApiHook for triggers (aiohttp, POLLS policy).

Same routes, validation, auth, body cap and error mapping as the sync hook (they
share `_routes` and `_responses`). The connection is read once, without blocking
the triggerer's event loop; each attempt uses its own short-lived aiohttp session
so that a cancelled trigger leaks nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook

from rce_lib.airflow_support import lookup_cache
from rce_lib.api.models import Health, Sddc, Task, TaskList, TaskStatus, TaskType
from rce_lib.api.tracing import is_trace_id, new_trace_id
from rce_lib.errors import ApiError, ContractViolation, ParamsError, Reason
from rce_lib.hooks import _routes
from rce_lib.hooks._responses import (
    BodyReader,
    ClientSettings,
    RawResponse,
    base_url,
    check_about,
    decode,
    raise_for_status,
)
from rce_lib.hooks._routes import ApiRequest, request_headers
from rce_lib.hooks.retry import POLLS, RetryPolicy, async_retrying, transport_error
from rce_lib.telemetry import tracing

log = logging.getLogger(__name__)

OnRequest = Callable[[ApiRequest, int | None, float], None]
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class _Config:
    base_url: str
    token: str
    settings: ClientSettings
    ssl: ssl.SSLContext | bool

    def __repr__(self) -> str:  # never show the token
        return f"_Config(base_url={self.base_url!r}, settings={self.settings!r})"


def _transient(e: BaseException) -> bool:
    """Connection, payload and timeout faults may pass; TLS failures will not."""
    if isinstance(e, aiohttp.ClientSSLError):
        return False
    return isinstance(e, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError)


class SddcApiAsyncHook(BaseHook):
    """Async reads for triggers: `get_task`, `get_sddc`, `get_health`, `list_sddc_tasks`."""

    conn_name_attr = "sddc_api_conn_id"
    default_conn_name = "sddc_api"
    conn_type = "http"
    hook_name = "SDDC Control API (async)"

    def __init__(
        self,
        sddc_api_conn_id: str = default_conn_name,
        *,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
        on_request: OnRequest | None = None,
        policy: RetryPolicy = POLLS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        if trace_id is not None and not is_trace_id(trace_id):
            raise ParamsError("trace_id must be 32 lowercase hex digits, not all zero")
        self.sddc_api_conn_id = sddc_api_conn_id
        self.trace_id = trace_id or new_trace_id()
        self.parent_span_id = parent_span_id
        self.on_request = on_request
        self._policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._config: _Config | None = None

    async def _get_config(self) -> _Config:
        """Read the connection once (in the triggerer: once a minute for all its triggers,
        rce_lib.airflow_support.lookup_cache), off the event loop where that would block."""
        if self._config is None:
            self._config = await lookup_cache.aget(self._cache_key, self._read_config)
        return self._config

    @property
    def _cache_key(self) -> tuple[str, str]:
        return ("sddc_api_async", self.sddc_api_conn_id)

    async def _read_config(self) -> _Config:
        conn: Any = await get_async_connection(self.sddc_api_conn_id, hook=self)
        if not conn.password:
            message = f"connection {self.sddc_api_conn_id!r} has no password (the bearer token)"
            raise ApiError(message, reason=Reason.AUTH_FAILED)
        settings = ClientSettings.from_extra(await get_async_extra_dejson(conn) if conn.extra else {})
        context: ssl.SSLContext | bool = settings.verify
        if settings.verify and settings.ca_bundle:
            context = await asyncio.to_thread(ssl.create_default_context, cafile=settings.ca_bundle)
        url = base_url(conn.host, conn.schema, conn.port)
        return _Config(url, str(conn.password), settings, context)

    def _observe(self, req: ApiRequest, status: int | None, seconds: float) -> None:
        if self.on_request is None:
            return
        try:
            self.on_request(req, status, seconds)
        except Exception:  # an observer must never fail a poll
            log.warning("on_request observer failed for %s %s", req.method, req.route, exc_info=True)

    def _span(self, req: ApiRequest, base: str) -> tracing.ClientSpan:
        """The attempt's client span (its id goes into `traceparent`; a fresh id when tracing is off)."""
        parsed = urlsplit(base)
        return tracing.client_span(
            req.method,
            req.route,
            trace_id=self.trace_id,
            parent_span_id=self.parent_span_id,
            server_address=parsed.hostname,
            server_port=parsed.port,
        )

    async def _attempt(self, req: ApiRequest) -> RawResponse:
        """One HTTP exchange; raises the typed error for anything but a 2xx."""
        cfg = await self._get_config()
        where = f"{req.method} {req.route}"
        span = self._span(req, cfg.base_url)
        headers = {
            **request_headers(req, self.trace_id, span.span_id),
            "Authorization": f"Bearer {cfg.token}",
        }
        timeout = aiohttp.ClientTimeout(
            total=cfg.settings.connect_timeout + cfg.settings.read_timeout,
            sock_connect=cfg.settings.connect_timeout,
            sock_read=cfg.settings.read_timeout,
        )
        status: int | None = None
        failure: ApiError | None = None
        started = time.perf_counter()
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(
                    req.method,
                    cfg.base_url + req.path,
                    params=req.params or None,
                    json=req.body,
                    headers=headers,
                    allow_redirects=False,
                    ssl=cfg.ssl,
                ) as resp,
            ):
                status = resp.status
                reader = BodyReader(req, cfg.settings.max_body_bytes, resp.headers.get("Content-Length"))
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    reader.add(chunk)
                content_type = resp.headers.get("Content-Type", "")
                raw = RawResponse(status, content_type, resp.headers.get("Retry-After"), reader.value())
        except (aiohttp.ClientError, TimeoutError) as e:
            # Raised outside this block so the aiohttp exception does not ride along as __context__.
            failure = transport_error(where, e, retryable=_transient(e), secrets=[cfg.token])
        finally:
            span.end(status, failure)
            self._observe(req, status, time.perf_counter() - started)
        if failure is not None:
            raise failure
        log.debug("%s -> HTTP %s", where, status)
        if status == 401:  # a rotated token: the next hook reads the connection again
            lookup_cache.forget(self._cache_key)
        raise_for_status(req, raw, [cfg.token])
        return raw

    async def _read(self, req: ApiRequest, model: type[Any]) -> Any:
        retry = async_retrying(self._policy, sleep=self._sleep, clock=self._clock, rng=self._rng, logger=log)
        raw: RawResponse = await retry(self._attempt, req)
        cfg = await self._get_config()
        return decode(req, raw, model, [cfg.token])

    async def get_task(self, task_id: str) -> Task:
        req = _routes.get_task(task_id)
        task: Task = await self._read(req, Task)
        if task.id != task_id:
            raise ContractViolation("GET /api/v1/tasks/{task_id}: answered another task than the one asked")
        return task

    async def get_sddc(self, sddc_id: str) -> Sddc:
        req = _routes.get_sddc(sddc_id)
        sddc: Sddc = await self._read(req, Sddc)
        check_about(req, sddc.id)
        return sddc

    async def get_health(self, sddc_id: str, window_s: int = 300) -> Health:
        req = _routes.get_health(sddc_id, window_s)
        health: Health = await self._read(req, Health)
        check_about(req, health.sddc_id)
        return health

    async def list_sddc_tasks(
        self,
        sddc_id: str,
        type: TaskType | str | None = None,  # the contract's parameter name
        status: TaskStatus | str | None = None,
        limit: int = 50,
    ) -> list[Task]:
        req = _routes.list_sddc_tasks(sddc_id, type, status, limit)
        tasks: TaskList = await self._read(req, TaskList)
        for task in tasks.items:
            check_about(req, task.sddc_id)
        return list(tasks.items)
