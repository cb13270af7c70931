"""Idempotency-Key derivation.

A key names one intended operation: (rollout, wave, SDDC, phase, host, target,
generation). Every retry, task retry or cleared task derives the same key and so
replays the first start instead of starting twice; a new *generation* (bumped by
the ledger after a FAILED/CANCELED task) is the only way to ask for a fresh start.
The readable prefix is for humans reading API logs; the digest carries identity.
"""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import BaseModel, ConfigDict, Field

from rce_lib.api.models import IDEMPOTENCY_KEY_RE

KEY_PREFIX = "rce"
DIGEST_HEX = 24
MAX_KEY_LEN = 128
_SCHEME = "rce-idempotency-key/v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class KeyParts(BaseModel):
    """Everything that makes two starts "the same operation"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rollout: str
    wave: str
    sddc_id: str
    phase: str
    host_id: str | None = None
    target_version: str | None = None
    generation: int = Field(default=0, ge=0)


def _digest(parts: KeyParts) -> str:
    # A JSON list keeps None apart from "" and stops field values from bleeding into each other.
    material = json.dumps(
        [
            _SCHEME,
            parts.rollout,
            parts.wave,
            parts.sddc_id,
            parts.phase,
            parts.host_id,
            parts.target_version,
            parts.generation,
        ],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("ascii")).hexdigest()[:DIGEST_HEX]


def _readable(value: str) -> str:
    # ':' separates fields, so it is replaced too; identity is in the digest, not here.
    return _UNSAFE.sub("_", value) or "_"


def idempotency_key(parts: KeyParts) -> str:
    """The deterministic key for these parts; always matches the contract's key pattern."""
    digest = _digest(parts)
    host = _readable(parts.host_id) if parts.host_id is not None else "-"
    key = ":".join(
        [KEY_PREFIX, _readable(parts.phase), _readable(parts.sddc_id), host, f"g{parts.generation}", digest]
    )
    if len(key) > MAX_KEY_LEN:
        key = f"{KEY_PREFIX}:{digest}"
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):  # pragma: no cover - guarded by construction
        raise ValueError("derived idempotency key does not match the contract pattern")
    return key
