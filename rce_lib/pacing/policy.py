"""The AIMD arithmetic, with no I/O: what one refusal or one accepted start does to a limit.

A service starts *open* (no limit of ours: the pool is the only ceiling). Sustained
refusals (at least `refusals` of them within `window_s`, and at least `refused_share`
of our starts in that window: a random 2% of 503s or a two-second 429 storm is not
sustained) close it to `decrease` x the work in flight
then; at most one decrease per `cooldown_s`, so one burst of refusals that all
answer the same overload counts once (TCP's once-per-round-trip rule). Every start
the service accepts while the limit is full adds `increase / limit`, i.e. about
`increase` per limit's worth of starts. A start accepted while the limit was not
full says nothing about more capacity, so it adds nothing (RFC 7661's rule for an
application-limited window): the limit never climbs far above what the pool lets
through. It opens again after `open_after_s` with no refusal at all.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field

ENV_VAR = "RCE_PACING"


class PacingPolicy(BaseModel):
    """Tunables of the adaptive limit (env `RCE_PACING`: JSON with these fields, or `off`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    refusals: int = Field(default=3, ge=1, description="Refused starts within window_s that close the limit.")
    refused_share: float = Field(
        default=0.5, gt=0, le=1, description="... and their share of the window's starts."
    )
    window_s: float = Field(default=30.0, gt=0)
    cooldown_s: float = Field(default=30.0, ge=0, description="At least this long between two decreases.")
    decrease: float = Field(default=0.5, gt=0, lt=1, description="Factor applied on sustained refusals.")
    increase: float = Field(
        default=1.0, gt=0, description="Slots added per limit's worth of accepted starts."
    )
    min_limit: float = Field(default=1.0, ge=1)
    slot_ttl_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="A slot never released (its holder vanished) frees itself after this.",
    )
    open_after_s: float = Field(default=600.0, gt=0, description="No refusal for this long: open again.")
    wait_poll_s: float = Field(default=5.0, gt=0, description="How often a waiting phase looks for room.")


def load_policy(environ: dict[str, str] | None = None) -> PacingPolicy:
    """The policy from the environment; a malformed value is an error, not a silent default."""
    raw = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip()
    if not raw:
        return PacingPolicy()
    if raw.lower() in ("off", "false", "0", "disabled"):
        return PacingPolicy(enabled=False)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_VAR} must be JSON (or 'off'): {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{ENV_VAR} must be a JSON object (or 'off')")
    return PacingPolicy.model_validate(data)


@dataclass(frozen=True)
class LimitState:
    """One service's adaptive limit. `limit` None: open (only the pool bounds it)."""

    limit: float | None = None
    refusals: int = 0
    accepted: int = 0
    window_started: float | None = None
    last_refusal: float | None = None
    last_decrease: float | None = None

    @property
    def slots(self) -> float:
        """Whole starts allowed in flight (inf when open)."""
        return math.inf if self.limit is None else float(math.floor(self.limit))


def after_refusal(state: LimitState, *, now: float, in_flight: int, policy: PacingPolicy) -> LimitState:
    """A start of ours was refused with 429/503 while `in_flight` starts of ours held slots
    on the service: count it; close or lower the limit if the refusals are sustained."""
    state = _window(state, now, policy)
    state = replace(state, refusals=state.refusals + 1, last_refusal=now)
    if state.refusals < policy.refusals or state.refusals < policy.refused_share * (
        state.refusals + state.accepted
    ):
        return state
    if state.last_decrease is not None and now - state.last_decrease < policy.cooldown_s:
        return state
    held = float(max(in_flight, 1))
    base = held if state.limit is None else min(state.limit, held)
    return LimitState(
        limit=max(policy.min_limit, base * policy.decrease),
        refusals=0,
        window_started=now,
        last_refusal=now,
        last_decrease=now,
    )


def after_acceptance(state: LimitState, *, now: float, in_flight: int, policy: PacingPolicy) -> LimitState:
    """A start of ours was accepted with `in_flight` starts of ours holding slots (this one included)."""
    state = _window(state, now, policy)
    state = replace(state, accepted=state.accepted + 1)
    if state.limit is None:
        return state
    if state.last_refusal is None or now - state.last_refusal >= policy.open_after_s:
        return LimitState()
    if in_flight < state.slots:
        return state
    return replace(state, limit=state.limit + policy.increase / state.limit)


def _window(state: LimitState, now: float, policy: PacingPolicy) -> LimitState:
    """The state with its counting window restarted if `window_s` has passed."""
    if state.window_started is None or now - state.window_started > policy.window_s:
        return replace(state, refusals=0, accepted=0, window_started=now)
    return state
