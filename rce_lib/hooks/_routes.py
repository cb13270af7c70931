"""One `ApiRequest` per contract operation, with every input checked first.

Ids are validated against the contract's patterns BEFORE a URL is built, so a
hostile id (`../`, `?`, `%2f`, a newline) can never change which resource is hit.
Shared by the sync and the async hook so both speak the contract identically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rce_lib.api.models import (
    HOST_ID_RE,
    IDEMPOTENCY_KEY_RE,
    LABEL_PATTERN,
    SDDC_ID_RE,
    SNAPSHOT_ID_RE,
    TASK_ID_RE,
    VERSION_RE,
    TaskStatus,
    TaskType,
)
from rce_lib.api.services import TASK_SERVICE
from rce_lib.api.tracing import traceparent
from rce_lib.errors import InvalidIdentifier, ParamsError

Component = Literal["vcenter", "nsx"]
COMPONENT_TASK: dict[str, TaskType] = {"vcenter": TaskType.UPGRADE_VCENTER, "nsx": TaskType.UPGRADE_NSX}
_LABEL_RE = re.compile(LABEL_PATTERN)


@dataclass(frozen=True)
class ApiRequest:
    """A request ready to send: `route` is the path template (a bounded label for metrics)."""

    method: Literal["GET", "POST", "PUT"]
    route: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    key: str | None = None
    #: For mutations: the task type the API must answer with (checked on adopt too).
    task_type: TaskType | None = None
    #: For single-resource reads and mutations: the SDDC the answer must be about.
    sddc_id: str | None = None

    @property
    def service(self) -> str:
        """The downstream service this request loads: a component service for task starts
        (the one whose capacity can refuse it), `control` for reads and polls."""
        return TASK_SERVICE[self.task_type].value if self.task_type is not None else "control"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check(kind: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidIdentifier(f"invalid {kind} {_shown(value)}: must match {pattern.pattern}")
    return value


def sddc_id(value: object) -> str:
    return _check("sddc_id", value, SDDC_ID_RE)


def host_id(value: object) -> str:
    return _check("host_id", value, HOST_ID_RE)


def task_id(value: object) -> str:
    return _check("task_id", value, TASK_ID_RE)


def snapshot_id(value: object) -> str:
    return _check("snapshot_id", value, SNAPSHOT_ID_RE)


def version(value: object) -> str:
    return _check("version", value, VERSION_RE)


def idempotency_key(value: object) -> str:
    return _check("Idempotency-Key", value, IDEMPOTENCY_KEY_RE)


def _bounded(name: str, value: int, low: int, high: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParamsError(f"{name} must be an integer in [{low}, {high}], got {_shown(value)}")
    return str(value)


def _enum(name: str, value: object, enum: type[TaskType] | type[TaskStatus]) -> str:
    allowed = {m.value for m in enum if m.value != "UNKNOWN"}
    if str(value) not in allowed:
        raise ParamsError(f"{name} must be one of {sorted(allowed)}, got {_shown(value)}")
    return str(value)


def list_sddcs(
    *,
    region: str | None,
    version_: str | None,
    labels: Mapping[str, str] | None,
    limit: int,
    cursor: str | None,
) -> ApiRequest:
    params = [("limit", _bounded("page_size", limit, 1, 500))]
    if region is not None:
        params.append(("region", str(region)))
    if version_ is not None:
        params.append(("version", version(version_)))
    for name, value in sorted((labels or {}).items()):
        label = f"{name}={value}"
        if not _LABEL_RE.fullmatch(label):
            raise InvalidIdentifier(f"invalid label {_shown(label)}: must match {LABEL_PATTERN}")
        params.append(("label", label))
    if cursor is not None:
        params.append(("cursor", cursor))
    return ApiRequest("GET", "/api/v1/sddcs", "/api/v1/sddcs", params)


def get_sddc(sddc: str) -> ApiRequest:
    sid = sddc_id(sddc)
    return ApiRequest("GET", "/api/v1/sddcs/{sddc_id}", f"/api/v1/sddcs/{sid}", sddc_id=sid)


def get_health(sddc: str, window_s: int) -> ApiRequest:
    sid = sddc_id(sddc)
    params = [("window_s", _bounded("window_s", window_s, 30, 86400))]
    return ApiRequest(
        "GET", "/api/v1/sddcs/{sddc_id}/health", f"/api/v1/sddcs/{sid}/health", params, sddc_id=sid
    )


def list_sddc_tasks(
    sddc: str, type_: TaskType | str | None, status: TaskStatus | str | None, limit: int
) -> ApiRequest:
    sid = sddc_id(sddc)
    params = [("limit", _bounded("limit", limit, 1, 200))]
    if type_ is not None:
        params.append(("type", _enum("type", type_, TaskType)))
    if status is not None:
        params.append(("status", _enum("status", status, TaskStatus)))
    return ApiRequest(
        "GET", "/api/v1/sddcs/{sddc_id}/tasks", f"/api/v1/sddcs/{sid}/tasks", params, sddc_id=sid
    )


def get_task(task: str) -> ApiRequest:
    return ApiRequest("GET", "/api/v1/tasks/{task_id}", f"/api/v1/tasks/{task_id(task)}")


def get_release(release: str) -> ApiRequest:
    return ApiRequest("GET", "/api/v1/releases/{version}", f"/api/v1/releases/{version(release)}")


def _mutation(
    method: Literal["POST", "PUT"],
    route: str,
    path: str,
    body: dict[str, Any],
    key: str,
    kind: TaskType,
    sid: str,
) -> ApiRequest:
    return ApiRequest(method, route, path, body=body, key=idempotency_key(key), task_type=kind, sddc_id=sid)


def start_precheck(sddc: str, target_version: str, key: str) -> ApiRequest:
    sid = sddc_id(sddc)
    body = {"target_version": version(target_version)}
    route, path = "/api/v1/sddcs/{sddc_id}/prechecks", f"/api/v1/sddcs/{sid}/prechecks"
    return _mutation("POST", route, path, body, key, TaskType.PRECHECK, sid)


def start_snapshot(sddc: str, key: str, label: str | None) -> ApiRequest:
    sid = sddc_id(sddc)
    body: dict[str, Any] = {}
    if label is not None:
        if not isinstance(label, str) or len(label) > 128:
            raise ParamsError("snapshot label must be a string of at most 128 characters")
        body["label"] = label
    route, path = "/api/v1/sddcs/{sddc_id}/snapshots", f"/api/v1/sddcs/{sid}/snapshots"
    return _mutation("POST", route, path, body, key, TaskType.SNAPSHOT, sid)


def start_component_upgrade(sddc: str, component: str, target_version: str, key: str) -> ApiRequest:
    sid = sddc_id(sddc)
    if component not in COMPONENT_TASK:
        raise InvalidIdentifier(f"invalid component {_shown(component)}: must be one of vcenter, nsx")
    body = {"target_version": version(target_version)}
    route = "/api/v1/sddcs/{sddc_id}/components/{component}/upgrade"
    path = f"/api/v1/sddcs/{sid}/components/{component}/upgrade"
    return _mutation("POST", route, path, body, key, COMPONENT_TASK[component], sid)


def set_host_maintenance(sddc: str, host: str, enabled: bool, key: str) -> ApiRequest:
    sid, hid = sddc_id(sddc), host_id(host)
    if not isinstance(enabled, bool):
        raise ParamsError(f"enabled must be a bool, got {_shown(enabled)}")
    route = "/api/v1/sddcs/{sddc_id}/hosts/{host_id}/maintenance"
    path = f"/api/v1/sddcs/{sid}/hosts/{hid}/maintenance"
    return _mutation("PUT", route, path, {"enabled": enabled}, key, TaskType.HOST_MAINTENANCE, sid)


def start_host_upgrade(sddc: str, host: str, target_version: str, key: str) -> ApiRequest:
    sid, hid = sddc_id(sddc), host_id(host)
    body = {"target_version": version(target_version)}
    route = "/api/v1/sddcs/{sddc_id}/hosts/{host_id}/upgrade"
    path = f"/api/v1/sddcs/{sid}/hosts/{hid}/upgrade"
    return _mutation("POST", route, path, body, key, TaskType.UPGRADE_HOST, sid)


def start_rollback(sddc: str, snapshot: str, key: str) -> ApiRequest:
    sid = sddc_id(sddc)
    body = {"snapshot_id": snapshot_id(snapshot)}
    route, path = "/api/v1/sddcs/{sddc_id}/rollback", f"/api/v1/sddcs/{sid}/rollback"
    return _mutation("POST", route, path, body, key, TaskType.ROLLBACK, sid)


def request_headers(req: ApiRequest, trace_id: str, span_id: str | None = None) -> dict[str, str]:
    """Headers every request carries (auth is added by the transport, never here, never logged).
    `span_id`: the client span of this attempt (a fresh random id when None)."""
    headers = {"Accept": "application/json", "traceparent": traceparent(trace_id, span_id)}
    if req.key is not None:
        headers["Idempotency-Key"] = req.key
    return headers
