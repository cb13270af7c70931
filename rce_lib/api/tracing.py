"""W3C Trace Context helpers.

One trace id per (run, SDDC) is derived, not stored, so every retry and every
cleared task of that SDDC lands in the same trace; each request gets a span of its
own (the OpenTelemetry client span's id when tracing is on, see rce_lib.telemetry).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets

_TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def trace_id_for(*parts: str | int | None) -> str:
    """A deterministic 32-hex trace id for these parts (never the invalid all-zero id)."""
    material = json.dumps(["rce-trace/v1", *parts], ensure_ascii=True, separators=(",", ":"))
    trace_id = hashlib.sha256(material.encode("ascii")).hexdigest()[:32]
    return trace_id if trace_id != _ZERO_TRACE else trace_id[:-1] + "1"


def span_id_for(*parts: str | int | None) -> str:
    """A deterministic 16-hex span id for these parts (never the invalid all-zero id): the id of
    a span emitted once but referred to earlier as a parent (the SDDC span, the wave span)."""
    material = json.dumps(["rce-span/v1", *parts], ensure_ascii=True, separators=(",", ":"))
    span_id = hashlib.sha256(material.encode("ascii")).hexdigest()[:16]
    return span_id if span_id != _ZERO_SPAN else span_id[:-1] + "1"


def new_trace_id() -> str:
    """A random trace id, for calls that belong to no (run, SDDC)."""
    while (trace_id := secrets.token_hex(16)) == _ZERO_TRACE:  # pragma: no cover - 2**-128
        pass
    return trace_id


def new_span_id() -> str:
    """A random 16-hex span id (never all zeros, which W3C forbids)."""
    while (span_id := secrets.token_hex(8)) == _ZERO_SPAN:  # pragma: no cover - 2**-64
        pass
    return span_id


def is_trace_id(value: str) -> bool:
    """Whether value is a valid W3C trace id."""
    return bool(_TRACE_ID_RE.fullmatch(value)) and value != _ZERO_TRACE


def is_span_id(value: str) -> bool:
    """Whether value is a valid W3C parent (span) id."""
    return bool(_SPAN_ID_RE.fullmatch(value)) and value != _ZERO_SPAN


def traceparent(trace_id: str, span_id: str | None = None) -> str:
    """A `traceparent` header value for one request: version 00, sampled, the span of this request
    (the client span's id when tracing is on; a fresh random id otherwise)."""
    if not is_trace_id(trace_id):
        raise ValueError("trace_id must be 32 lowercase hex digits, not all zero")
    if span_id is not None and not is_span_id(span_id):
        raise ValueError("span_id must be 16 lowercase hex digits, not all zero")
    return f"00-{trace_id}-{span_id or new_span_id()}-01"
