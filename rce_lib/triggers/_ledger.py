"""The ledger as triggers reach it: by a URL whose password is masked in their kwargs
(Airflow stores kwargs in its trigger table and shows them in the UI) and resolved again
in the triggerer, from the same `RCE_LEDGER_URL` / `rce_state` connection the task used."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async

log = logging.getLogger(__name__)


def masked(url: str | None) -> str | None:
    """The URL to keep in a trigger's kwargs (password replaced by ***)."""
    from rce_lib.airflow_support.ledger_conn import public_url

    return public_url(url) if url else url


async def resolved(url: str) -> str:
    """The real URL for a masked one; blocking lookups run off the event loop."""
    from rce_lib.airflow_support.ledger_conn import resolve_public_url

    result: str = await sync_to_async(resolve_public_url, thread_sensitive=False)(url)
    return result


async def metrics_observer(metrics_ledger_url: str | None) -> Any:
    """The request observer of a trigger: None without a ledger, or when its URL cannot be
    resolved here (request metrics must never fail a wait)."""
    if not metrics_ledger_url:
        return None
    from rce_lib.metrics.downstream import ledger_recorder

    try:
        url = await resolved(metrics_ledger_url)
    except Exception as err:
        log.warning("request metrics are off for this wait: %s", err)
        return None
    return ledger_recorder(url).observe
