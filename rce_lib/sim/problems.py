"""RFC 9457 problem details, raised from anywhere in a handler and rendered once."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_TYPE = "about:blank"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ApiProblem(Exception):
    """An error answer: status, machine code, human detail, optional extras and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        existing_task_id: str | None = None,
        headers: dict[str, str] | None = None,
        service: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.existing_task_id = existing_task_id
        self.headers = headers or {}
        self.service = service
        self.retry_after = retry_after  # seconds; rendered as a Retry-After header by the app

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.existing_task_id is not None:
            body["existing_task_id"] = self.existing_task_id
        return body


def problem_response(problem: ApiProblem, extra: dict[str, Any] | None = None) -> web.Response:
    body = problem.body()
    if extra:
        body.update(extra)
    return web.Response(
        status=problem.status,
        body=json.dumps(body).encode(),
        content_type="application/problem+json",
        headers=problem.headers,
    )
