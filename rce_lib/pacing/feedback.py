"""The hook observer that tells the pacer how each of our starts was answered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from rce_lib.pacing.store import Pacer

if TYPE_CHECKING:
    from rce_lib.hooks._routes import ApiRequest

log = logging.getLogger(__name__)

Observer = Callable[["ApiRequest", int | None, float], None]

REFUSED = frozenset({429, 503})


def pacing_observer(pacer: Pacer) -> Observer:
    """Feed every answer to a start (POST/PUT of a task) into the service's limit.

    Only starts count: they are the work a service's capacity refuses; reads and
    polls are throttled by a rate limit of their own, which the retry policy honours.
    """

    def observe(req: ApiRequest, status: int | None, seconds: float) -> None:
        if req.task_type is None or status is None or req.method not in ("POST", "PUT"):
            return
        service = req.service
        if status in REFUSED:
            change = pacer.refused(service)
            if change.changed_limit:
                log.warning(
                    "%s keeps refusing our starts (%d in %.0f s): our limit on it is now %.1f (was %s)",
                    service,
                    pacer.policy.refusals,
                    pacer.policy.window_s,
                    change.after.limit or 0.0,
                    "open" if change.before.limit is None else f"{change.before.limit:.1f}",
                )
        elif 200 <= status < 300:
            change = pacer.accepted(service)
            if change.changed_limit and change.after.limit is None:
                log.info("%s has accepted our starts for a while: our limit on it is open again", service)

    return observe


def fan_out(*observers: Observer | None) -> Observer:
    """One observer calling several (each may fail alone: the hook logs and goes on)."""
    live = [o for o in observers if o is not None]

    def observe(req: ApiRequest, status: int | None, seconds: float) -> None:
        for o in live:
            try:
                o(req, status, seconds)
            except Exception:  # one observer must not starve the others
                log.warning("request observer %r failed", o, exc_info=True)

    return observe
