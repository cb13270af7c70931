"""The client's pydantic models (rce_lib.api.models) against the contract's schemas.

* every `example`/`examples` value in the contract parses with the model of its schema and
  dumps back equal;
* for every response schema, instances generated FROM THE SCHEMA (hypothesis, a small
  JSON-Schema-to-strategy translation below) parse with the model and dump back equal,
  modulo defaults (only the fields that were sent are compared);
* every enum value of the contract is a known member of the client's open enum.

Where the client is deliberately stricter than the contract (ids it will later put in a
URL must match the path patterns), the generator uses that pattern: see TIGHTENED.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from rce_lib.api import models
from tests.contract._contract import Contract

CONTRACT = Contract()
SCHEMAS: dict[str, Any] = CONTRACT.spec["components"]["schemas"]
MODELS: dict[str, type[BaseModel]] = {
    "MaintenanceWindow": models.MaintenanceWindow,
    "SddcSummary": models.SddcSummary,
    "Host": models.Host,
    "Sddc": models.Sddc,
    "Release": models.Release,
    "Task": models.Task,
    "TaskError": models.TaskError,
    "Health": models.Health,
    "Problem": models.Problem,
}
ENUMS = {
    "SddcStatus": models.SddcStatus,
    "TaskType": models.TaskType,
    "TaskStatus": models.TaskStatus,
}
#: Response bodies that are not a named schema, with the model that reads them.
INLINE = {
    ("/api/v1/sddcs", "get"): models.SddcPage,
    ("/api/v1/sddcs/{sddc_id}/tasks", "get"): models.TaskList,
}
#: (schema, property) -> the pattern the client requires although the contract says only "string":
#: these ids go into URLs later, so they must match the contract's path patterns (_routes.py).
TIGHTENED = {
    ("SddcSummary", "id"): models.SDDC_ID_PATTERN,
    ("Host", "id"): models.HOST_ID_PATTERN,
    ("Task", "id"): models.TASK_ID_PATTERN,
}


def _resolve(schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    ref = schema.get("$ref")
    if ref is None:
        return None, schema
    name = ref.rsplit("/", 1)[-1]
    return name, SCHEMAS[name]


def _strategy(schema: dict[str, Any], name: str | None = None) -> st.SearchStrategy[Any]:  # noqa: C901
    """Instances of a JSON schema, for the subset of JSON Schema this contract uses."""
    ref_name, schema = _resolve(schema)
    name = ref_name or name
    if "allOf" in schema:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            _, part = _resolve(part)
            if "allOf" in part or set(part) == {"$ref"}:
                return _strategy(part, name)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        if len(schema["allOf"]) == 1:  # a described $ref ("allOf: [Version]")
            return _strategy(schema["allOf"][0])
        return _object(merged, name)
    if "oneOf" in schema:
        return st.one_of([_strategy(s) for s in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    types = schema.get("type", "object")
    if isinstance(types, list):
        return st.one_of([_strategy({**schema, "type": t}, name) for t in types])
    if types == "null":
        return st.none()
    if types == "boolean":
        return st.booleans()
    if types == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if types == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.floats(low, high, allow_nan=False, allow_infinity=False)
    if types == "string":
        if schema.get("format") == "date-time":
            moments = st.datetimes(datetime(2000, 1, 1), datetime(2199, 1, 1), timezones=st.just(UTC))
            return moments.map(lambda d: d.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(max_size=schema.get("maxLength", 20))
    if types == "array":
        return st.lists(_strategy(schema["items"]), max_size=3)
    return _object(schema, name)


def _object(schema: dict[str, Any], name: str | None) -> st.SearchStrategy[dict[str, Any]]:
    props = {
        key: (
            st.from_regex(TIGHTENED[(name, key)], fullmatch=True)
            if (name, key) in TIGHTENED
            else _strategy(sub)
        )
        for key, sub in schema.get("properties", {}).items()
    }
    if (name, "id") in TIGHTENED:
        props["id"] = st.from_regex(TIGHTENED[(name, "id")], fullmatch=True)
    if name == "Sddc":
        props["id"] = st.from_regex(TIGHTENED[("SddcSummary", "id")], fullmatch=True)
    required = set(schema.get("required", []))
    extra = schema.get("additionalProperties")
    fixed = st.fixed_dictionaries(
        {k: v for k, v in props.items() if k in required},
        optional={k: v for k, v in props.items() if k not in required},
    )
    if isinstance(extra, dict) and not props:
        return st.dictionaries(st.text(max_size=8), _strategy(extra), max_size=3)
    if extra is True and not props:
        return st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3)
    return fixed


def _roundtrip(model: type[BaseModel], instance: dict[str, Any]) -> None:
    parsed = model.model_validate(instance)
    assert parsed.model_dump(mode="json", exclude_unset=True) == instance
    again = model.model_validate_json(parsed.model_dump_json())
    assert again == parsed


SETTINGS = settings(
    max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_instances_of_every_schema_roundtrip_through_the_model(name: str) -> None:
    @SETTINGS
    @given(instance=_strategy({"$ref": f"#/components/schemas/{name}"}))
    def check(instance: dict[str, Any]) -> None:
        CONTRACT.validator(f"#/components/schemas/{name}").validate(instance)  # the generator is right
        _roundtrip(MODELS[name], instance)

    check()


@pytest.mark.parametrize(("path", "method"), sorted(INLINE))
def test_inline_response_bodies_roundtrip_through_the_model(path: str, method: str) -> None:
    schema = CONTRACT.spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]

    @SETTINGS
    @given(instance=_strategy(schema))
    def check(instance: dict[str, Any]) -> None:
        _roundtrip(INLINE[(path, method)], instance)

    check()


def _examples(node: Any, where: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every `example` and `examples` value in the document, with where it sits."""
    found: list[tuple[tuple[str, ...], Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "example":
                found.append((where, value))
            elif key == "examples" and isinstance(value, list):
                found += [(where, v) for v in value]
            else:
                found += _examples(value, (*where, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _examples(value, (*where, str(index)))
    return found


EXAMPLES = _examples(CONTRACT.spec)


#: A valid instance with only the required fields, for each schema a property example sits in.
_MINIMAL: dict[str, dict[str, Any]] = {
    "TaskError": {"code": "X", "message": "m", "retryable": False},
    "Problem": {"title": "t", "status": 409},
}


def test_the_contract_has_examples() -> None:
    assert len(EXAMPLES) >= 3, EXAMPLES


@pytest.mark.parametrize(
    ("where", "value"), EXAMPLES, ids=lambda v: "/".join(v) if isinstance(v, tuple) else None
)
def test_every_example_in_the_contract_roundtrips(where: tuple[str, ...], value: Any) -> None:
    assert where[:2] == ("components", "schemas"), f"an example outside the schemas: {where}"
    name = where[2]
    if len(where) == 3:  # an example of a whole named schema
        if name in MODELS:
            _roundtrip(MODELS[name], value)
        else:
            CONTRACT.validator(f"#/components/schemas/{name}").validate(value)
            adapter: TypeAdapter[Any] = TypeAdapter(models.Version if name == "Version" else ENUMS[name])
            assert adapter.dump_python(adapter.validate_python(value), mode="json") == value
        return
    assert where[3] == "properties" and len(where) == 5, where
    instance = {**_MINIMAL[name], where[4]: value}
    CONTRACT.validator(f"#/components/schemas/{name}").validate(instance)
    _roundtrip(MODELS[name], instance)


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_every_enum_value_of_the_contract_is_known_to_the_client(name: str) -> None:
    known = {member.value for member in ENUMS[name]} - {"UNKNOWN"}
    assert set(SCHEMAS[name]["enum"]) == known


def test_every_object_schema_has_a_model() -> None:
    objects = {n for n, s in SCHEMAS.items() if s.get("type") == "object" or "allOf" in s}
    assert objects == set(MODELS)
