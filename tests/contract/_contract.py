"""The vendored contract as data, for conformance checks of what is SENT to the API.

OpenAPI 3.1 schemas are JSON Schema 2020-12: the whole document is one registered resource,
so every `#/components/...` ref in it resolves unchanged through a JSON pointer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACT = Path(__file__).resolve().parents[2] / "include" / "contracts" / "sddc-api.yaml"
BASE = "urn:rce:sddc-api"
TRACEPARENT_RE = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
#: Headers a client may send besides the contract's own: transport headers, nothing else.
TRANSPORT_HEADERS = {
    "accept",
    "accept-encoding",
    "connection",
    "content-length",
    "content-type",
    "host",
    "user-agent",
}
METHODS = ("get", "put", "post", "delete", "patch")


def _rebased(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (BASE + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebased(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebased(v) for v in node]
    return node


def pointer(*parts: str | int) -> str:
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class SentRequest:
    """A request as the server saw it (method, path, query pairs, headers, raw body)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


class Contract:
    def __init__(self, path: Path = CONTRACT) -> None:
        self.spec: dict[str, Any] = yaml.safe_load(path.read_text())
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self._routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", template) + "$"), template)
            for template in self.spec["paths"]
        ]

    # ---- schemas

    def validator(self, ptr: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": BASE + ptr}, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def resolve(self, node: Any) -> Any:
        """Follow a local `$ref` (parameters, responses) to the object it names."""
        while isinstance(node, dict) and "$ref" in node:
            node = self.registry.resolver(BASE).lookup(BASE + node["$ref"]).contents
        return node

    def operations(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(path template, method, operation) for every operation."""
        return [
            (template, method, op)
            for template, item in self.spec["paths"].items()
            for method, op in item.items()
            if method in METHODS
        ]

    def parameters(self, template: str, method: str) -> list[dict[str, Any]]:
        item = self.spec["paths"][template]
        params = [self.resolve(p) for p in item.get("parameters", [])]
        params += [self.resolve(p) for p in item[method].get("parameters", [])]
        return params

    # ---- requests

    def route(self, path: str) -> tuple[str, dict[str, str]]:
        """The one path template the path matches, and its path parameters."""
        matches = [(t, m) for rx, t in self._routes if (m := rx.match(path))]
        assert len(matches) == 1, f"{path!r} matches {len(matches)} contract paths"
        template, match = matches[0]
        names = re.findall(r"\{([^}]+)\}", template)
        return template, dict(zip(names, match.groups(), strict=True))

    def check_request(self, sent: SentRequest, *, token: str) -> str:
        """Every rule the contract sets for a request; returns the operationId."""
        template, path_values = self.route(sent.path)
        method = sent.method.lower()
        assert method in self.spec["paths"][template], f"{sent.method} not allowed on {template}"
        op = self.spec["paths"][template][method]
        where = f"{sent.method} {template}"
        params = self.parameters(template, method)
        self._check_values(where, [p for p in params if p["in"] == "path"], list(path_values.items()))
        self._check_values(where, [p for p in params if p["in"] == "query"], sent.query, coerce=True)
        self._check_headers(where, sent, params, token)
        self._check_body(where, sent, op)
        return str(op["operationId"])

    def _check_values(
        self, where: str, params: list[dict[str, Any]], values: list[tuple[str, str]], *, coerce: bool = False
    ) -> None:
        by_name = {p["name"]: p for p in params}
        for name, value in values:
            assert name in by_name, f"{where}: parameter {name!r} is not in the contract"
            schema = by_name[name]["schema"]
            instance: Any = value
            if coerce and self.resolve(schema).get("type") == "integer":
                assert re.fullmatch(r"-?[0-9]+", value), f"{where}: {name}={value!r} is not an integer"
                instance = int(value)
            errors = list(self.validator_for(schema).iter_errors(instance))
            assert not errors, f"{where}: {name}={value!r}: {errors[0].message}"
        for name, param in by_name.items():
            if param.get("required"):
                assert name in dict(values), f"{where}: required parameter {name!r} missing"

    def _check_headers(self, where: str, sent: SentRequest, params: list[dict[str, Any]], token: str) -> None:
        headers = {k.lower(): v for k, v in sent.headers.items()}
        assert headers.get("authorization") == f"Bearer {token}", f"{where}: no bearer token"
        assert TRACEPARENT_RE.match(headers.get("traceparent", "")), f"{where}: bad traceparent"
        declared = {p["name"].lower(): p for p in params if p["in"] == "header"}
        unknown = set(headers) - TRANSPORT_HEADERS - {"authorization", "traceparent"} - set(declared)
        assert not unknown, f"{where}: headers the contract does not know: {sorted(unknown)}"
        for name, param in declared.items():
            if name in headers:
                errors = list(self.validator_for(param["schema"]).iter_errors(headers[name]))
                assert not errors, f"{where}: {name}: {errors[0].message}"
        if sent.method in ("POST", "PUT"):
            # The contract makes the key optional; the engine sends one on EVERY mutation, so that a
            # retry, a task retry or a cleared task replays the first start instead of starting twice.
            assert "idempotency-key" in headers, f"{where}: mutation without an Idempotency-Key"

    def validator_for(self, schema: dict[str, Any]) -> Draft202012Validator:
        """A validator for a schema copied out of the document (its local refs rebased)."""
        return Draft202012Validator(
            _rebased(schema), registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def _check_body(self, where: str, sent: SentRequest, op: dict[str, Any]) -> None:
        request_body = self.resolve(op.get("requestBody"))
        if request_body is None:
            assert sent.body == b"", f"{where}: a body on an operation that takes none"
            return
        if not sent.body:
            assert not request_body.get("required"), f"{where}: required body missing"
            return
        content_type = {k.lower(): v for k, v in sent.headers.items()}.get("content-type", "")
        media = content_type.split(";")[0].strip()
        assert media in request_body["content"], f"{where}: content type {content_type!r} not allowed"
        method = sent.method.lower()
        template, _ = self.route(sent.path)
        ptr = pointer("paths", template, method, "requestBody", "content", media, "schema")
        errors = list(self.validator(ptr).iter_errors(json.loads(sent.body)))
        assert not errors, f"{where}: body: {errors[0].message}"
