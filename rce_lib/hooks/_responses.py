"""Turning HTTP answers into models or typed errors, the same way for both hooks.

Anything the contract does not allow (a redirect, HTML, bad JSON, wrong types,
an empty or oversized body, an answer about another SDDC) is a ContractViolation;
an RFC 9457 problem is an ApiError carrying status, code and message; 429/503 is
a ThrottledError carrying Retry-After. Texts taken from a body are redacted of
secrets and cut short, so an echoing server cannot put the token into a log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rce_lib.api.models import Problem, Task
from rce_lib.errors import ApiError, ContractViolation, ParamsError, Reason, ThrottledError
from rce_lib.hooks import _routes
from rce_lib.hooks._routes import ApiRequest
from rce_lib.hooks.retry import parse_retry_after

M = TypeVar("M", bound=BaseModel)
MiB = 1 << 20
_EXCERPT_CHARS = 120
_REASONS = {401: Reason.AUTH_FAILED, 403: Reason.FORBIDDEN, 404: Reason.NOT_FOUND, 409: Reason.CONFLICT}
OPERATION_IN_PROGRESS = "OPERATION_IN_PROGRESS"


class StartResult(BaseModel):
    """What a mutation got: the task, and whether it was created, replayed (same key) or adopted (409)."""

    model_config = ConfigDict(frozen=True)

    task: Task
    outcome: Literal["created", "replayed", "adopted"]


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise ParamsError(f"connection extra {name!r} must be a boolean")


def _as_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ParamsError(f"connection extra {name!r} must be a positive number")
    try:
        number = float(value)
    except ValueError:
        raise ParamsError(f"connection extra {name!r} must be a positive number") from None
    if not number > 0:
        raise ParamsError(f"connection extra {name!r} must be a positive number")
    return number


@dataclass(frozen=True)
class ClientSettings:
    """The connection extras this hook understands; none of them is ever sent as a header."""

    verify: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_body_bytes: int = MiB

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> ClientSettings:
        ca_bundle = extra.get("ca_bundle")
        if ca_bundle is not None and not isinstance(ca_bundle, str):
            raise ParamsError("connection extra 'ca_bundle' must be a path")
        return cls(
            verify=_as_bool("verify", extra.get("verify", True)),
            ca_bundle=ca_bundle or None,
            connect_timeout=_as_positive("connect_timeout", extra.get("connect_timeout", 5.0)),
            read_timeout=_as_positive("read_timeout", extra.get("read_timeout", 30.0)),
            max_body_bytes=int(_as_positive("max_body_bytes", extra.get("max_body_bytes", MiB))),
        )

    @property
    def requests_verify(self) -> bool | str:
        """The `verify` value for requests: the CA bundle path when one is given."""
        return self.ca_bundle if self.verify and self.ca_bundle else self.verify


def base_url(host: str | None, schema: str | None, port: int | None) -> str:
    """The base URL from a connection, as HttpHook builds it."""
    host = host or ""
    url = host if "://" in host else f"{schema or 'http'}://{host}"
    return f"{url.rstrip('/')}:{port}" if port else url.rstrip("/")


@dataclass(frozen=True)
class RawResponse:
    """The parts of an HTTP answer that matter, with the body already read under the cap."""

    status: int
    content_type: str
    retry_after: str | None
    body: bytes


class BodyReader:
    """Accumulates a body and refuses it once it passes the cap (a huge body is a contract breach)."""

    def __init__(self, req: ApiRequest, cap: int, declared: str | None) -> None:
        self._req = req
        self._cap = cap
        self._chunks: list[bytes] = []
        self._size = 0
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            self._too_large()

    def _too_large(self) -> None:
        raise ContractViolation(f"{self._req.method} {self._req.route}: body larger than {self._cap} bytes")

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._cap:
            self._too_large()
        self._chunks.append(chunk)

    def read_all(self, chunks: Iterable[bytes]) -> bytes:
        for chunk in chunks:
            self.add(chunk)
        return self.value()

    def value(self) -> bytes:
        return b"".join(self._chunks)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret from text (before any truncation, so no partial secret survives)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def excerpt(body: bytes, secrets: Iterable[str]) -> str:
    """A short, printable, redacted excerpt of a body for an error message."""
    text = redact(body[: 4 * _EXCERPT_CHARS + 1024].decode("utf-8", errors="replace"), secrets)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return repr(text[:_EXCERPT_CHARS] + ("..." if len(text) > _EXCERPT_CHARS else ""))


def _where(req: ApiRequest) -> str:
    return f"{req.method} {req.route}"


def _problem(raw: RawResponse) -> Problem | None:
    if "json" not in raw.content_type.lower():
        return None
    try:
        return Problem.model_validate_json(raw.body)
    except ValidationError:
        return None


def raise_for_status(req: ApiRequest, raw: RawResponse, secrets: Iterable[str]) -> None:
    """Raise the typed error for any non-2xx answer."""
    status = raw.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise ContractViolation(f"{_where(req)}: HTTP {status} redirect refused (never followed)")
    problem = _problem(raw)
    code = redact(problem.code, secrets)[:64] if problem and problem.code else None
    if problem:
        text = problem.detail or problem.title
        message = f"{_where(req)}: {redact(text, secrets)[:300]}"
    else:
        message = f"{_where(req)}: HTTP {status} without a problem body: {excerpt(raw.body, secrets)}"
    if status in (429, 503):
        retry_after = parse_retry_after(raw.retry_after)
        raise ThrottledError(message, status=status, code=code, retryable=True, retry_after=retry_after)
    reason = _REASONS.get(status, Reason.API_ERROR)
    if status == 422 and code == Reason.UPGRADE_PATH_NOT_SUPPORTED.value:
        reason = Reason.UPGRADE_PATH_NOT_SUPPORTED
    existing = problem.existing_task_id if problem else None
    raise ApiError(
        message,
        status=status,
        code=code,
        reason=reason,
        retryable=status >= 500,
        existing_task_id=existing,
    )


def _summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:3]:
        loc = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)


def decode(
    req: ApiRequest, raw: RawResponse, model: type[M], secrets: Iterable[str], *, ok: Iterable[int] = (200,)
) -> M:
    """The answer parsed into model, or a ContractViolation saying briefly why not."""
    secrets = list(secrets)
    raise_for_status(req, raw, secrets)
    if raw.status not in set(ok):
        raise ContractViolation(f"{_where(req)}: unexpected HTTP {raw.status}")
    if not raw.body.strip():
        raise ContractViolation(f"{_where(req)}: HTTP {raw.status} with an empty body")
    if "json" not in raw.content_type.lower():
        shown = redact(raw.content_type, secrets)[:60] or "no content type"
        raise ContractViolation(f"{_where(req)}: expected JSON, got {shown}: {excerpt(raw.body, secrets)}")
    try:
        return model.model_validate_json(raw.body)
    except ValidationError as e:
        why = f"body is not a valid {model.__name__} ({_summary(e)})"
        raise ContractViolation(f"{_where(req)}: {why}: {excerpt(raw.body, secrets)}") from None


def check_about(req: ApiRequest, sddc_id: str) -> None:
    """An answer about another SDDC than the one asked is a contract breach, not data to act on."""
    if req.sddc_id is not None and sddc_id != req.sddc_id:
        raise ContractViolation(f"{_where(req)}: answer is about another SDDC than the one asked")


def decode_start(req: ApiRequest, raw: RawResponse, secrets: Iterable[str]) -> StartResult:
    """A 202 (created) or 200 (replayed) Task answer to a mutation."""
    task = decode(req, raw, Task, secrets, ok=(200, 202))
    check_task(req, task)
    return StartResult(task=task, outcome="created" if raw.status == 202 else "replayed")


def check_task(req: ApiRequest, task: Task) -> None:
    """The task must belong to the SDDC and be of the type that the request starts."""
    check_about(req, task.sddc_id)
    if req.task_type is not None and task.type is not req.task_type:
        raise ContractViolation(
            f"{_where(req)}: answered a {task.type.value} task, expected {req.task_type.value}"
        )


def adoptable_task_id(req: ApiRequest, error: ApiError) -> str | None:
    """The running task to adopt for a 409 OPERATION_IN_PROGRESS, if that is what the error is."""
    if error.status != 409 or error.code != OPERATION_IN_PROGRESS or error.existing_task_id is None:
        return None
    try:
        return _routes.task_id(error.existing_task_id)
    except ValueError:
        raise ContractViolation(f"{_where(req)}: 409 names an invalid existing_task_id") from None
