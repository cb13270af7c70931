"""Copy the Airflow pools' sizes into the ledger, as each service's fixed ceiling.

The pools (`rce_vcenter`, `rce_nsx`, `rce_esx`) are where an SRE sets how much of our work
each downstream service may have in flight. Airflow checks a pool only when it queues a task
for a worker; a phase started in the triggerer (rce_lib.triggers.start) is never queued, so
the engine enforces the same number itself: a slot in the ledger per downstream task, never
more than the ceiling (rce_lib.pacing.store). Only processes with the metadata database read
pools, so the copy is made there:

* by the scheduler, when a wave's run starts (`PoolCeilingListener`, a listener plugin);
* by the api-server, after every pool change made through the REST API or the UI
  (`PoolChangeMiddleware`, a root middleware plugin);
* by `airflow dags test`, which runs the scheduler's code in-process.

A pool that is missing or unbounded (-1 slots) gives no ceiling; a phase whose service has no
ceiling in the ledger does not start in the triggerer but on a worker, under its pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl

from rce_lib.api.services import POOL_FOR_SERVICE

if TYPE_CHECKING:
    from rce_lib.ledger import Ledger

log = logging.getLogger(__name__)

SOURCE = "airflow-pool"
WAVE_DAG_PREFIX = "rce_wave_"
POOLS_PATH = "/api/v2/pools"


def read_pool_sizes() -> dict[str, int | None]:
    """Each service's pool size from Airflow's metadata database (None: missing or unbounded).
    Only where that database is reachable: the scheduler, the api-server, `dags test`.

    Read in a session of its own, never committed (see `PoolCeilingListener`)."""
    from airflow import settings
    from airflow.models.pool import Pool
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    names = {pool: service.value for service, pool in POOL_FOR_SERVICE.items()}
    with Session(bind=settings.engine) as session:
        rows = session.execute(select(Pool.pool, Pool.slots).where(Pool.pool.in_(names))).all()
    sizes: dict[str, int | None] = dict.fromkeys(names.values())
    for name, slots in rows:
        sizes[names[str(name)]] = int(slots) if slots is not None and int(slots) >= 0 else None
    return sizes


def sync(ledger: Ledger | None = None, sizes: dict[str, int | None] | None = None) -> dict[str, int | None]:
    """Copy the pool sizes (read here unless given) into the ledger; returns what was copied."""
    from rce_lib.airflow_support.ledger_conn import get_ledger
    from rce_lib.pacing.store import Pacer

    sizes = read_pool_sizes() if sizes is None else sizes
    Pacer(ledger or get_ledger()).set_ceilings(sizes, SOURCE)
    log.info("service ceilings from the Airflow pools: %s", sizes)
    return sizes


def _sync_quietly(why: str) -> None:
    """Never let the copy break the process that makes it: the previous ceilings stay."""
    try:
        sync()
    except Exception as err:
        log.warning("pool sizes not copied into the ledger (%s): %s: %s", why, type(err).__name__, err)


class PoolCeilingListener:
    """Scheduler side: every wave run starts with the pools' current sizes as its ceilings.

    The copy runs in a thread of its own. Airflow's sessions are scoped per thread and the
    scheduler's forbids commits mid-loop: anything here that used it (the ledger connection's
    lookup does) would commit, or roll back, the scheduler's own work, and the run would never
    start. The scheduler waits for the copy at most `JOIN_S`."""

    JOIN_S = 5.0

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        if not str(getattr(dag_run, "dag_id", "")).startswith(WAVE_DAG_PREFIX):
            return
        why = f"run {getattr(dag_run, 'run_id', '?')} started"
        copy = threading.Thread(target=_sync_quietly, args=(why,), name="rce-pool-ceilings", daemon=True)
        copy.start()
        copy.join(self.JOIN_S)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class PoolChangeMiddleware:
    """api-server side: after a successful change to any pool (REST API or UI), copy the
    sizes at once, so that a pool lowered mid-wave binds the phases in the triggerer too.

    The copy is made before the response starts: the change is committed by then (Airflow's
    session dependency closes when the endpoint returns), and whoever changed the pool finds
    the new ceiling in force once answered."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _changes_pools(scope):
            await self.app(scope, receive, send)
            return
        why = f"{scope.get('method')} {scope.get('path')}"

        async def copy_then_send(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start" and 200 <= int(message.get("status", 0)) < 300:
                import anyio.to_thread

                await anyio.to_thread.run_sync(_sync_quietly, why)
            await send(message)

        await self.app(scope, receive, copy_then_send)


def _changes_pools(scope: Scope) -> bool:
    return (
        scope.get("type") == "http"
        and scope.get("method") in ("POST", "PUT", "PATCH", "DELETE")
        and str(scope.get("path", "")).startswith(POOLS_PATH)
    )
