"""What a phase decides to do next, given the real SDDC (no Airflow).

A phase is a small state machine: it reads the SDDC as it really is, then
returns one Step. Deciding from real state (not from what the engine believes)
is what makes every phase resume-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rce_lib.hooks.sddc_api import SddcApiHook, StartResult


@dataclass(frozen=True)
class Start:
    """Start (or replay, or adopt) one downstream operation.

    `op` names the operation in idempotency keys and in the ledger
    (precheck, snapshot, vcenter, nsx, host_enter, host_upgrade, host_exit, rollback).
    """

    op: str
    call: Callable[[SddcApiHook, str], StartResult]
    description: str
    host_id: str | None = None


@dataclass(frozen=True)
class Done:
    """The phase's goal holds in the real SDDC."""

    message: str
    did_nothing: bool = False


@dataclass(frozen=True)
class Wait:
    """Come back later (deferred, no worker slot held): e.g. a cluster is at capacity."""

    seconds: float
    message: str


Step = Start | Done | Wait
