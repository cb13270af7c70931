"""Validate simulator responses against the vendored OpenAPI contract.

OpenAPI 3.1 schemas are JSON Schema 2020-12: the whole document is registered as one
resource, and each response schema is validated through a JSON pointer into it, so the
contract's own `#/components/schemas/...` refs resolve unchanged.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACT = Path(__file__).resolve().parents[2] / "include" / "contracts" / "sddc-api.yaml"
BASE = "urn:rce:sddc-api"


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    def __init__(self) -> None:
        self.spec: dict[str, Any] = yaml.safe_load(CONTRACT.read_text())
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)

    def validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": BASE + pointer},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def schema_validate(self, name: str, instance: Any) -> None:
        self.validator(_pointer("components", "schemas", name)).validate(instance)

    def check(self, resp: httpx.Response, path: str, method: str) -> Any:
        """Assert the response is one the contract lists for this operation, and matches its schema."""
        op = self.spec["paths"][path][method.lower()]
        status = str(resp.status_code)
        assert status in op["responses"], f"{method} {path}: {status} not in contract: {resp.text}"
        response = op["responses"][status]
        parts: tuple[str, ...] = ("paths", path, method.lower(), "responses", status)
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[-1]
            parts = ("components", "responses", name)
            response = self.spec["components"]["responses"][name]
        for header, spec in (response.get("headers") or {}).items():
            if spec.get("required"):
                assert header in resp.headers, f"{status} must carry {header}"
        ctype = resp.headers.get("content-type", "").split(";")[0].strip()
        assert ctype in response["content"], f"{status} content-type {ctype!r} not in contract"
        body = resp.json()
        self.validator(_pointer(*parts, "content", ctype, "schema")).validate(body)
        if isinstance(body, dict) and "created_at" in body:
            datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
            datetime.fromisoformat(body["updated_at"].replace("Z", "+00:00"))
        return body
