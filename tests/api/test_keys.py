from __future__ import annotations

import re

import pytest

from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.api.models import IDEMPOTENCY_KEY_PATTERN

KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
BASE = KeyParts(
    rollout="r-2026-01",
    wave="w1",
    sddc_id="sddc-1",
    phase="upgrade_hosts",
    host_id="h-7",
    target_version="1.3.0",
)


def test_key_is_deterministic_and_readable() -> None:
    key = idempotency_key(BASE)
    assert key == idempotency_key(BASE.model_copy())
    assert key.startswith("rce:upgrade_hosts:sddc-1:h-7:g0:")
    assert re.fullmatch(r"[0-9a-f]{24}", key.rsplit(":", 1)[1])
    assert KEY_RE.fullmatch(key)


def test_key_without_host_uses_a_dash() -> None:
    key = idempotency_key(BASE.model_copy(update={"host_id": None}))
    assert key.startswith("rce:upgrade_hosts:sddc-1:-:g0:")


@pytest.mark.parametrize(
    "change",
    [
        {"rollout": "r-2026-02"},
        {"wave": "w2"},
        {"sddc_id": "sddc-2"},
        {"phase": "precheck"},
        {"host_id": "h-8"},
        {"host_id": None},
        {"host_id": ""},
        {"target_version": "1.4.0"},
        {"target_version": None},
        {"generation": 1},
    ],
)
def test_any_different_part_gives_a_different_key(change: dict[str, object]) -> None:
    assert idempotency_key(BASE.model_copy(update=change)) != idempotency_key(BASE)


def test_fields_cannot_bleed_into_each_other() -> None:
    a = KeyParts(rollout="a:b", wave="c", sddc_id="s", phase="p")
    b = KeyParts(rollout="a", wave="b:c", sddc_id="s", phase="p")
    assert idempotency_key(a) != idempotency_key(b)


def test_sanitised_prefix_does_not_merge_distinct_values() -> None:
    a = BASE.model_copy(update={"sddc_id": "sddc/1"})
    b = BASE.model_copy(update={"sddc_id": "sddc 1"})
    assert idempotency_key(a) != idempotency_key(b)


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "x" * 500,
        "../../etc/passwd",
        "a b\nc\td",
        "ünïcødé-✓",
        "semi;colon,comma=eq",
        "\x00\x01",
        "%2f%00",
        "🙂" * 40,
    ],
)
def test_pattern_holds_for_hostile_inputs(hostile: str) -> None:
    for field in ("rollout", "wave", "sddc_id", "phase", "host_id", "target_version"):
        key = idempotency_key(BASE.model_copy(update={field: hostile}))
        assert KEY_RE.fullmatch(key), (field, key)


def test_too_long_falls_back_to_the_digest_only() -> None:
    key = idempotency_key(BASE.model_copy(update={"phase": "p" * 200}))
    assert re.fullmatch(r"rce:[0-9a-f]{24}", key)


def test_huge_generation_still_fits() -> None:
    key = idempotency_key(BASE.model_copy(update={"generation": 10**60}))
    assert KEY_RE.fullmatch(key)


def test_negative_generation_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyParts(rollout="r", wave="w", sddc_id="s", phase="p", generation=-1)
