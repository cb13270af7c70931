"""OpenTelemetry spans for the rollout: off unless an OTLP endpoint is configured.

Tracing is switched on by `RCE_OTEL_EXPORTER_OTLP_ENDPOINT` (the base URL of an
OTLP/HTTP receiver, e.g. `http://otel-collector:4318`; `/v1/traces` is appended
unless the URL already ends with it). Then this process gets a TracerProvider of
its OWN (service.name `rce`, a BatchSpanProcessor, the OTLP/HTTP exporter); it is
never installed as the global provider, so Airflow's own `[traces]` setup is left
alone. Without the variable nothing here touches OpenTelemetry at all: the hooks
send the same `traceparent` as before (deterministic trace id, fresh span id).

The span model (README, "Logs and traces"):

* one trace per (rollout, wave, SDDC, run): `sddc_ref()`; its root is the SDDC span,
  whose span id is derived too, so every phase span can name it as parent long before
  it is emitted (once, when the SDDC's upgrade ends: `emit_span`);
* phase spans (`task_span`), one per execution of a phase task in a worker, children of
  the SDDC span; the HTTP attempts (`client_span`) are children of the phase span, or
  of the trigger's wait span in the triggerer, and their span id is the one the
  `traceparent` header carries;
* one trace per (rollout, wave, run): `wave_ref()`, whose root, the wave span, is emitted
  by the wave summary task; each SDDC span links to it.

Everything is best-effort: a span that cannot be made never changes what the caller does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rce_lib.api.tracing import is_span_id, is_trace_id, new_span_id, span_id_for, trace_id_for

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "ENDPOINT_ENV",
    "SERVICE_NAME",
    "ClientSpan",
    "OpenSpan",
    "SpanRef",
    "TaskSpan",
    "build_provider",
    "client_span",
    "configure_from_env",
    "current_span_id",
    "emit_span",
    "enabled",
    "force_flush",
    "install",
    "reset",
    "sddc_ref",
    "task_span",
    "traces_endpoint",
    "wait_span",
    "wave_ref",
]

log = logging.getLogger(__name__)

ENDPOINT_ENV = "RCE_OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME = "rce"
SCOPE = "rce"
TRACES_PATH = "/v1/traces"

AttrValue = str | bool | int | float
Attributes = Mapping[str, AttrValue | None]

#: Ids the next span must take (trace id, span id), for spans whose ids are derived, not random.
_FORCED: ContextVar[tuple[int | None, int | None]] = ContextVar("rce_forced_span_ids", default=(None, None))


@dataclass(frozen=True)
class SpanRef:
    """A span by its W3C ids (32 and 16 lowercase hex digits)."""

    trace_id: str
    span_id: str


def sddc_ref(rollout: str, wave: str, sddc_id: str, run_id: str) -> SpanRef:
    """The SDDC span of one run: the root of the (run, SDDC) trace the API calls already carry."""
    return SpanRef(
        trace_id_for(rollout, wave, sddc_id, run_id), span_id_for("sddc", rollout, wave, sddc_id, run_id)
    )


def wave_ref(rollout: str, wave: str, run_id: str) -> SpanRef:
    """The wave span of one run (its trace also holds the cohort's and the gate's API calls)."""
    return SpanRef(trace_id_for(rollout, wave, run_id), span_id_for("wave", rollout, wave, run_id))


# -- the provider ------------------------------------------------------------------------------

_provider: TracerProvider | None = None
_configured = False


def traces_endpoint(base: str) -> str:
    """The OTLP/HTTP traces URL for a base endpoint (as OTEL_EXPORTER_OTLP_ENDPOINT is read)."""
    base = base.strip().rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def build_provider(processor: SpanProcessor) -> TracerProvider:
    """A TracerProvider for rce: service.name `rce`, derived ids where asked, this processor."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}), id_generator=_ids())
    provider.add_span_processor(processor)
    return provider


def configure_from_env() -> TracerProvider | None:
    """The provider for this process: built once from `RCE_OTEL_EXPORTER_OTLP_ENDPOINT`, else None."""
    global _configured, _provider
    if _configured:
        return _provider
    _configured = True
    endpoint = os.environ.get(ENDPOINT_ENV, "").strip()
    if not endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _provider = build_provider(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint(endpoint))))
    except Exception:  # tracing must never stop an upgrade
        log.warning("tracing not enabled: %s=%r could not be used", ENDPOINT_ENV, endpoint, exc_info=True)
        _provider = None
    return _provider


def install(provider: TracerProvider | None) -> TracerProvider | None:
    """Use this provider from now on (tests; None switches tracing off); returns the previous one."""
    global _configured, _provider
    previous, _provider, _configured = _provider, provider, True
    return previous


def reset() -> None:
    """Forget the provider; the next use reads the environment again (tests)."""
    global _configured, _provider
    _provider, _configured = None, False


def enabled() -> bool:
    return configure_from_env() is not None


def force_flush(timeout_millis: int = 2000) -> None:
    """Export what is buffered: worker processes are short-lived, so each task ends with this
    (bounded: a collector that does not answer costs a task at most this long, never its result)."""
    provider = _provider
    if provider is None:
        return
    try:
        provider.force_flush(timeout_millis)
    except Exception:
        log.warning("tracing: flushing spans failed", exc_info=True)


def _tracer() -> Tracer | None:
    provider = configure_from_env()
    return provider.get_tracer(SCOPE) if provider is not None else None


def _ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class DerivableIds(IdGenerator):
        """Random ids, unless `_FORCED` names the ids of the span being started."""

        def __init__(self) -> None:
            self._random = RandomIdGenerator()

        def generate_span_id(self) -> int:
            return _FORCED.get()[1] or self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            return _FORCED.get()[0] or self._random.generate_trace_id()

    return DerivableIds()


@contextmanager
def _forced(trace_id: str, span_id: str | None = None) -> Iterator[None]:
    token = _FORCED.set((int(trace_id, 16), int(span_id, 16) if span_id else None))
    try:
        yield
    finally:
        _FORCED.reset(token)


def _parent(trace_id: str, parent_span_id: str | None) -> Context:
    """A remote parent in this trace; an empty context (a root span) without a parent id."""
    from opentelemetry import trace
    from opentelemetry.context import Context

    if parent_span_id is None or not is_span_id(parent_span_id):
        return Context()
    parent = trace.SpanContext(
        int(trace_id, 16), int(parent_span_id, 16), is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())


def _clean(attributes: Attributes) -> dict[str, AttrValue]:
    return {k: v for k, v in attributes.items() if v is not None}


def _hex_span_id(span: Span) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else None


def current_span_id(trace_id: str) -> str | None:
    """The id of the current span if it is one of ours in this trace (to hand to a trigger)."""
    if _provider is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid and format(ctx.trace_id, "032x") == trace_id:
        return format(ctx.span_id, "016x")
    return None


# -- spans ---------------------------------------------------------------------------------------


@dataclass
class TaskSpan:
    """A phase (or task) span being recorded; `span` is None when tracing is off."""

    span: Span | None = None
    outcome: str = "succeeded"
    reason: str | None = None
    error: bool = False

    @property
    def span_id(self) -> str | None:
        return _hex_span_id(self.span) if self.span is not None else None

    def set(self, **attributes: AttrValue | None) -> None:
        if self.span is not None:
            self.span.set_attributes(_clean(attributes))

    def finish(self, outcome: str, reason: str | None = None, *, error: bool = False) -> None:
        """How the execution ended (set before the span ends; the last call wins)."""
        self.outcome, self.reason, self.error = outcome, reason, error


@contextmanager
def task_span(
    name: str, *, trace_id: str, parent_span_id: str | None, attributes: Attributes
) -> Iterator[TaskSpan]:
    """A span around one execution of a task, current while it runs (so HTTP spans nest under it).

    An exception leaving it marks it failed unless the caller called `finish` first (a deferral
    or a skip is not an error: the caller decides).
    """
    tracer = _tracer() if is_trace_id(trace_id) else None
    if tracer is None:
        yield TaskSpan()
        return
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    try:
        with _forced(trace_id):
            span = tracer.start_span(
                name,
                context=_parent(trace_id, parent_span_id),
                kind=SpanKind.INTERNAL,
                attributes=_clean(attributes),
            )
        token = context.attach(trace.set_span_in_context(span))
    except Exception:
        log.warning("tracing: could not start span %s", name, exc_info=True)
        yield TaskSpan()
        return
    handle = TaskSpan(span)
    try:
        yield handle
    except BaseException as exc:
        if handle.outcome == "succeeded":
            handle.finish("failed", type(exc).__name__, error=True)
        if handle.error:
            span.record_exception(exc)
        raise
    finally:
        try:
            context.detach(token)
            span.set_attributes(_clean({"rce.outcome": handle.outcome, "rce.reason": handle.reason}))
            if handle.error:
                span.set_status(Status(StatusCode.ERROR, handle.reason))
            span.end()
        except Exception:
            log.warning("tracing: could not end span %s", name, exc_info=True)


@dataclass
class OpenSpan:
    """A span the caller ends itself, never current (a trigger's wait: its polls name it as
    parent explicitly, so no OpenTelemetry context crosses the trigger's `yield`s)."""

    span: Span | None = None
    ended: bool = False

    @property
    def span_id(self) -> str | None:
        return _hex_span_id(self.span) if self.span is not None else None

    def finish(self, outcome: str, reason: str | None = None, *, error: bool = False) -> None:
        if self.span is None or self.ended:
            return
        try:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_attributes(_clean({"rce.outcome": outcome, "rce.reason": reason}))
            if error:
                self.span.set_status(Status(StatusCode.ERROR, reason))
        except Exception:
            log.warning("tracing: could not finish a span", exc_info=True)

    def end(self) -> None:
        """End it (once; later calls do nothing)."""
        if self.span is not None and not self.ended:
            self.ended = True
            try:
                self.span.end()
            except Exception:
                log.warning("tracing: could not end a span", exc_info=True)


def wait_span(name: str, *, trace_id: str, parent_span_id: str | None, attributes: Attributes) -> OpenSpan:
    """Start a span for a wait in the triggerer, a child of `parent_span_id` (the phase span
    that deferred); an empty handle when tracing is off."""
    tracer = _tracer()
    if tracer is None or not is_trace_id(trace_id):
        return OpenSpan()
    try:
        from opentelemetry.trace import SpanKind

        with _forced(trace_id):
            span = tracer.start_span(
                name,
                context=_parent(trace_id, parent_span_id),
                kind=SpanKind.INTERNAL,
                attributes=_clean(attributes),
            )
    except Exception:
        log.warning("tracing: could not start span %s", name, exc_info=True)
        return OpenSpan()
    return OpenSpan(span)


@dataclass
class ClientSpan:
    """One HTTP attempt's span. `span_id` goes into `traceparent` (a fresh id when tracing is off)."""

    span_id: str
    span: Span | None = field(default=None, repr=False)

    def end(self, status: int | None, error: BaseException | None = None) -> None:
        """Close the span with the response status (None: no response, an error) or the error."""
        if self.span is None:
            return
        try:
            from opentelemetry.trace import Status, StatusCode

            if status is not None:
                self.span.set_attribute("http.response.status_code", status)
            if error is not None:
                self.span.set_attribute("error.type", type(error).__name__)
                self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            elif status is None or status >= 400:
                self.span.set_status(Status(StatusCode.ERROR, str(status)))
            self.span.end()
        except Exception:
            log.warning("tracing: could not end an HTTP span", exc_info=True)


def client_span(
    method: str,
    route: str,
    *,
    trace_id: str,
    parent_span_id: str | None,
    server_address: str | None,
    server_port: int | None = None,
) -> ClientSpan:
    """Start the CLIENT span of one HTTP attempt: a child of the current span when that span is
    in this trace (the phase span), else of `parent_span_id` (a trigger's wait span), else a root
    of the trace. The caller ends it (`ClientSpan.end`); it is never made current."""
    tracer = _tracer()
    if tracer is None or not is_trace_id(trace_id):
        return ClientSpan(new_span_id())
    try:
        from opentelemetry.trace import SpanKind

        parent = None if current_span_id(trace_id) is not None else _parent(trace_id, parent_span_id)
        with _forced(trace_id):
            span = tracer.start_span(
                f"{method} {route}",
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=_clean(
                    {
                        "http.request.method": method,
                        "url.template": route,
                        "server.address": server_address,
                        "server.port": server_port,
                    }
                ),
            )
        span_id = _hex_span_id(span)
    except Exception:
        log.warning("tracing: could not start the span of %s %s", method, route, exc_info=True)
        return ClientSpan(new_span_id())
    return ClientSpan(span_id, span) if span_id else ClientSpan(new_span_id())


def emit_span(
    name: str,
    ref: SpanRef,
    *,
    start: datetime | None,
    end: datetime,
    attributes: Attributes,
    links: Sequence[SpanRef] = (),
    error: str | None = None,
) -> None:
    """Record a finished span whose ids are derived (the SDDC span, the wave span), as a root."""
    tracer = _tracer()
    if tracer is None:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        span_links = [
            Link(trace.SpanContext(int(r.trace_id, 16), int(r.span_id, 16), is_remote=True)) for r in links
        ]
        begin = start or end
        with _forced(ref.trace_id, ref.span_id):
            span = tracer.start_span(
                name,
                context=_parent(ref.trace_id, None),
                kind=SpanKind.INTERNAL,
                attributes=_clean(attributes),
                links=span_links,
                start_time=_ns(min(begin, end)),
            )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=_ns(end))
    except Exception:
        log.warning("tracing: could not emit span %s", name, exc_info=True)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
