"""SddcApiHook: the only code that talks HTTP to the SDDC Control API (sync, for operators).

Built on the HTTP provider's HttpHook for connection handling and the session,
with three changes the contract needs: the connection password is sent as a
Bearer token (HttpHook would send Basic auth), connection extras are settings and
are never copied into headers (HttpHook copies unknown extras into headers), and
redirects are refused so the token can never be sent to another host.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import BaseHook
from airflow.providers.http.hooks.http import HttpHook
from requests.auth import AuthBase

from rce_lib.airflow_support import lookup_cache
from rce_lib.api.models import (
    Health,
    Release,
    Sddc,
    SddcPage,
    SddcSummary,
    Task,
    TaskList,
    TaskStatus,
    TaskType,
)
from rce_lib.api.tracing import is_trace_id, new_trace_id
from rce_lib.errors import ApiError, ContractViolation, ParamsError, RceError, Reason
from rce_lib.hooks import _routes
from rce_lib.hooks._responses import (
    BodyReader,
    ClientSettings,
    RawResponse,
    StartResult,
    adoptable_task_id,
    check_about,
    check_task,
    decode,
    decode_start,
    raise_for_status,
)
from rce_lib.hooks._routes import ApiRequest, request_headers
from rce_lib.hooks.retry import MUTATIONS, READS, RetryPolicy, retrying, transport_error
from rce_lib.telemetry import tracing

__all__ = ["OnRequest", "SddcApiAsyncHook", "SddcApiHook", "StartResult"]

log = logging.getLogger(__name__)

#: Observer called once per HTTP attempt: (the request, status or None, seconds).
OnRequest = Callable[[ApiRequest, int | None, float], None]
_CHUNK = 64 * 1024


class _BearerAuth(AuthBase):
    """Adds the bearer token at send time; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


def _refuse_redirect(
    where: str, statuses: list[int], resp: requests.Response, *args: Any, **kwargs: Any
) -> None:
    """Refuse a 3xx before requests reads its body (it would, unbounded, to prepare the next hop)."""
    statuses.append(resp.status_code)
    if 300 <= resp.status_code < 400:
        resp.close()
        raise ContractViolation(f"{where}: HTTP {resp.status_code} redirect refused (never followed)")


class _Deadline:
    """The whole exchange's deadline (connect + read timeouts, as the async hook's `total`).

    requests' timeouts are per socket operation: a body that trickles a byte at a time
    never trips them, and the size cap would take days to. Once the deadline passes, a
    timer shuts the socket's read side from its own thread, which ends the blocked read.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.passed = False
        self._timer: threading.Timer | None = None

    def arm(self, resp: requests.Response, elapsed: float) -> None:
        self._timer = threading.Timer(max(0.0, self.seconds - elapsed), self._expire, (resp,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, resp: requests.Response) -> None:
        self.passed = True
        with contextlib.suppress(Exception):  # already closed or released: nothing left to stop
            resp.raw.shutdown()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def error(self) -> requests.exceptions.ReadTimeout:
        return requests.exceptions.ReadTimeout(f"answer not complete within {self.seconds:g} s")


def cache_key(conn_id: str) -> tuple[str, str]:
    return ("connection", conn_id)


class _ParsedConnection:
    """A connection whose extras are parsed (and their secrets masked) once.

    Airflow's `Connection.extra_dejson` parses the extras and masks them on every access, and
    in the triggerer each mask is a blocking request to its supervisor; building one session
    reads them twice (HttpHook's base URL, then our settings). Everything else is the
    connection's own."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._extra: dict[str, Any] = connection.extra_dejson

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return copy.deepcopy(self._extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class _SessionHook(HttpHook):
    """HttpHook used for its connection and session only: bearer auth, extras never become headers."""

    def __init__(self, http_conn_id: str) -> None:
        super().__init__(method="GET", http_conn_id=http_conn_id)
        self.settings = ClientSettings()
        self.token = ""

    @classmethod
    def get_connection(cls, conn_id: str) -> Any:
        """The connection; in the triggerer kept a minute for every phase going on there
        (rce_lib.airflow_support.lookup_cache)."""
        return lookup_cache.get(
            cache_key(conn_id), lambda: _ParsedConnection(super(_SessionHook, cls).get_connection(conn_id))
        )

    def _extract_auth(self, connection: Any) -> AuthBase:
        if not connection.password:
            message = f"connection {self.http_conn_id!r} has no password (the bearer token)"
            raise ApiError(message, reason=Reason.AUTH_FAILED)
        self.token = str(connection.password)
        return _BearerAuth(self.token)

    def _configure_session_from_extra(
        self, session: requests.Session, connection: Any, extra_options: dict[str, Any]
    ) -> requests.Session:
        self.settings = ClientSettings.from_extra(connection.extra_dejson)
        session.verify = self.settings.requests_verify
        return session


class SddcApiHook(BaseHook):
    """Typed calls for every operation of the SDDC Control API contract, with the named retry policies.

    :param sddc_api_conn_id: an http connection: host/port/schema, password = bearer token, extras
        `verify`, `ca_bundle`, `connect_timeout`, `read_timeout`, `max_body_bytes`.
    :param trace_id: the (run, SDDC) trace id; every request gets a span of its own under it.
    :param parent_span_id: parent of the requests' client spans when no span of this trace is
        current (tracing on only; rce_lib.telemetry.tracing).
    :param on_request: observer called once per HTTP attempt (for metrics).
    """

    conn_name_attr = "sddc_api_conn_id"
    default_conn_name = "sddc_api"
    conn_type = "http"
    hook_name = "SDDC Control API"

    def __init__(
        self,
        sddc_api_conn_id: str = default_conn_name,
        *,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
        on_request: OnRequest | None = None,
        reads: RetryPolicy = READS,
        mutations: RetryPolicy = MUTATIONS,
        sleep: Callable[[float], None] = time.sleep,
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
        self._reads = reads
        self._mutations = mutations
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._http = _SessionHook(sddc_api_conn_id)
        self._session: requests.Session | None = None

    # -- session and transport ---------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """The requests session (built once: connection lookup, auth, TLS settings)."""
        if self._session is None:
            self._session = self._http.get_conn()
        return self._session

    @property
    def base_url(self) -> str:
        """The API's base URL from the connection (looked up on first use; never holds the token)."""
        self.get_conn()
        return str(self._http.base_url)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _secrets(self) -> list[str]:
        return [self._http.token] if self._http.token else []

    def _observe(self, req: ApiRequest, status: int | None, seconds: float) -> None:
        if self.on_request is None:
            return
        try:
            self.on_request(req, status, seconds)
        except Exception:  # an observer must never fail an upgrade
            log.warning("on_request observer failed for %s %s", req.method, req.route, exc_info=True)

    def _attempt(self, req: ApiRequest) -> RawResponse:
        """One HTTP exchange; raises the typed error for anything but a 2xx."""
        session = self.get_conn()
        settings = self._http.settings
        url = self._http.url_from_endpoint(req.path)
        where = f"{req.method} {req.route}"
        statuses: list[int] = []
        failure: RceError | None = None
        span = self._span(req, url)
        started = time.perf_counter()
        deadline = _Deadline(settings.connect_timeout + settings.read_timeout)
        try:
            with session.request(
                req.method,
                url,
                params=req.params or None,
                json=req.body,
                headers=request_headers(req, self.trace_id, span.span_id),
                timeout=(settings.connect_timeout, settings.read_timeout),
                # Per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the
                # environment override the session's `verify`, i.e. the connection's ca_bundle.
                verify=settings.requests_verify,
                allow_redirects=False,
                stream=True,
                hooks={"response": [partial(_refuse_redirect, where, statuses)]},
            ) as resp:
                deadline.arm(resp, time.perf_counter() - started)
                reader = BodyReader(req, settings.max_body_bytes, resp.headers.get("Content-Length"))
                body = reader.read_all(resp.iter_content(chunk_size=_CHUNK))
                if deadline.passed:  # the cut may look like a clean end of a shorter body
                    raise deadline.error()
                content_type = resp.headers.get("Content-Type", "")
                raw = RawResponse(resp.status_code, content_type, resp.headers.get("Retry-After"), body)
        except requests.RequestException as e:
            # Raised outside this block: the requests exception (holding the prepared request,
            # Authorization header included) must not ride along as __context__.
            failure = self._transport_failure(where, deadline.error() if deadline.passed else e)
        finally:
            deadline.cancel()
            span.end(statuses[-1] if statuses else None, failure)
            self._observe(req, statuses[-1] if statuses else None, time.perf_counter() - started)
        if failure is not None:
            raise failure
        log.debug("%s -> HTTP %s", where, raw.status)
        if raw.status == 401:  # a rotated token: the next hook reads the connection again
            lookup_cache.forget(cache_key(self.sddc_api_conn_id))
        raise_for_status(req, raw, self._secrets())
        return raw

    def _span(self, req: ApiRequest, url: str) -> tracing.ClientSpan:
        """The attempt's client span (its id goes into `traceparent`; a fresh id when tracing is off)."""
        parsed = urlsplit(url)
        return tracing.client_span(
            req.method,
            req.route,
            trace_id=self.trace_id,
            parent_span_id=self.parent_span_id,
            server_address=parsed.hostname,
            server_port=parsed.port,
        )

    def _transport_failure(self, where: str, e: requests.RequestException) -> RceError:
        if isinstance(e, requests.exceptions.ContentDecodingError):
            return ContractViolation(f"{where}: body could not be decoded")
        if isinstance(e, requests.exceptions.SSLError):
            return transport_error(where, e, retryable=False, secrets=self._secrets())
        transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
        return transport_error(where, e, retryable=isinstance(e, transient), secrets=self._secrets())

    def _exchange(self, req: ApiRequest, policy: RetryPolicy) -> RawResponse:
        retry = retrying(policy, sleep=self._sleep, clock=self._clock, rng=self._rng, logger=log)
        result: RawResponse = retry(self._attempt, req)
        return result

    def _read(self, req: ApiRequest, model: type[Any]) -> Any:
        return decode(req, self._exchange(req, self._reads), model, self._secrets())

    def _start(self, req: ApiRequest) -> StartResult:
        try:
            raw = self._exchange(req, self._mutations)
        except ApiError as e:
            existing = adoptable_task_id(req, e)
            if existing is None:
                raise
            task = self.get_task(existing)
            check_task(req, task)
            log.info("%s %s: adopting running task %s", req.method, req.route, task.id)
            return StartResult(task=task, outcome="adopted")
        return decode_start(req, raw, self._secrets())

    # -- reads -------------------------------------------------------------------------------

    def list_sddcs(
        self,
        region: str | None = None,
        version: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
    ) -> Iterator[SddcSummary]:
        """Every SDDC matching the filters, page after page (inputs are checked before any request)."""

        def page_request(cursor: str | None) -> ApiRequest:
            return _routes.list_sddcs(
                region=region, version_=version, labels=labels, limit=page_size, cursor=cursor
            )

        return self._pages(page_request(None), page_request)

    def _pages(
        self, req: ApiRequest, page_request: Callable[[str | None], ApiRequest]
    ) -> Iterator[SddcSummary]:
        seen: set[str] = set()
        while True:
            page: SddcPage = self._read(req, SddcPage)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return
            if cursor in seen:
                raise ContractViolation("GET /api/v1/sddcs: next_cursor repeats (pagination loop)")
            seen.add(cursor)
            req = page_request(cursor)

    def get_sddc(self, sddc_id: str) -> Sddc:
        req = _routes.get_sddc(sddc_id)
        sddc: Sddc = self._read(req, Sddc)
        check_about(req, sddc.id)
        return sddc

    def get_health(self, sddc_id: str, window_s: int = 300) -> Health:
        req = _routes.get_health(sddc_id, window_s)
        health: Health = self._read(req, Health)
        check_about(req, health.sddc_id)
        return health

    def list_sddc_tasks(
        self,
        sddc_id: str,
        type: TaskType | str | None = None,  # the contract's parameter name
        status: TaskStatus | str | None = None,
        limit: int = 50,
    ) -> list[Task]:
        req = _routes.list_sddc_tasks(sddc_id, type, status, limit)
        tasks: TaskList = self._read(req, TaskList)
        for task in tasks.items:
            check_about(req, task.sddc_id)
        return list(tasks.items)

    def get_task(self, task_id: str) -> Task:
        req = _routes.get_task(task_id)
        task: Task = self._read(req, Task)
        if task.id != task_id:
            raise ContractViolation("GET /api/v1/tasks/{task_id}: answered another task than the one asked")
        return task

    def get_release(self, version: str) -> Release:
        req = _routes.get_release(version)
        release: Release = self._read(req, Release)
        if release.version != version:
            raise ContractViolation("GET /api/v1/releases/{version}: answered another release")
        return release

    # -- mutations (each replay-safe through its Idempotency-Key) -----------------------------

    def start_precheck(self, sddc_id: str, target_version: str, *, key: str) -> StartResult:
        return self._start(_routes.start_precheck(sddc_id, target_version, key))

    def start_snapshot(self, sddc_id: str, *, key: str, label: str | None = None) -> StartResult:
        return self._start(_routes.start_snapshot(sddc_id, key, label))

    def start_component_upgrade(
        self, sddc_id: str, component: Literal["vcenter", "nsx"], target_version: str, *, key: str
    ) -> StartResult:
        return self._start(_routes.start_component_upgrade(sddc_id, component, target_version, key))

    def set_host_maintenance(self, sddc_id: str, host_id: str, enabled: bool, *, key: str) -> StartResult:
        return self._start(_routes.set_host_maintenance(sddc_id, host_id, enabled, key))

    def start_host_upgrade(self, sddc_id: str, host_id: str, target_version: str, *, key: str) -> StartResult:
        return self._start(_routes.start_host_upgrade(sddc_id, host_id, target_version, key))

    def start_rollback(self, sddc_id: str, snapshot_id: str, *, key: str) -> StartResult:
        return self._start(_routes.start_rollback(sddc_id, snapshot_id, key))

    def test_connection(self) -> tuple[bool, str]:
        """For the Airflow UI: one small inventory page proves URL, TLS and token."""
        try:
            next(iter(self.list_sddcs(page_size=1)), None)
        except Exception as e:
            return False, str(e)
        return True, "SDDC Control API reachable and token accepted"


from rce_lib.hooks.sddc_api_async import SddcApiAsyncHook  # noqa: E402  (re-export, one import path)
