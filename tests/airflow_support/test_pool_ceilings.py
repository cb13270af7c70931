"""The pools' sizes reach the ledger as the services' ceilings: when a wave's run starts (the
scheduler's listener) and after a pool changes through the REST API (the api-server's
middleware). Under a real standalone: tests/integration/test_promotion_standalone.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from rce_lib.airflow_support import pool_ceilings
from rce_lib.airflow_support.pool_ceilings import PoolCeilingListener, PoolChangeMiddleware
from rce_lib.ledger import Ledger
from rce_lib.pacing.store import Pacer


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(pool_ceilings, "sync", lambda *a, **k: calls.append("sync") or {})
    return calls


class _DagRun:
    def __init__(self, dag_id: str) -> None:
        self.dag_id, self.run_id = dag_id, "manual__1"


def test_a_wave_run_starting_copies_the_pools_and_other_dags_do_not(synced: list[str]) -> None:
    listener = PoolCeilingListener()
    listener.on_dag_run_running(_DagRun("rce_reconcile"), "started")
    listener.on_dag_run_running(_DagRun("someone_elses_dag"), "started")
    assert synced == []
    listener.on_dag_run_running(_DagRun("rce_wave_canary"), "started")
    assert synced == ["sync"]


def test_the_copy_never_runs_in_the_schedulers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's sessions are scoped per thread: in the scheduler's, the ledger connection's
    lookup would commit (or roll back) the scheduler's own transaction."""
    threads: list[str] = []
    monkeypatch.setattr(pool_ceilings, "sync", lambda: threads.append(threading.current_thread().name))
    PoolCeilingListener().on_dag_run_running(_DagRun("rce_wave_canary"), "started")
    assert threads == ["rce-pool-ceilings"]


def test_a_failed_copy_never_breaks_the_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise OSError("ledger unreachable")

    monkeypatch.setattr(pool_ceilings, "sync", broken)
    PoolCeilingListener().on_dag_run_running(_DagRun("rce_wave_canary"), "started")  # logged, not raised


def test_sync_writes_the_sizes_given_and_clears_an_unbounded_pool(ledger: Ledger) -> None:
    Pacer(ledger).set_ceilings({"esx": 40}, "test")
    assert pool_ceilings.sync(ledger, {"vcenter": 60, "nsx": 30, "esx": None}) == {
        "vcenter": 60,
        "nsx": 30,
        "esx": None,
    }
    pacer = Pacer(ledger)
    assert (pacer.ceiling("vcenter"), pacer.ceiling("nsx"), pacer.ceiling("esx")) == (60, 30, None)


def _call(method: str, path: str, status: int) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path}
    asyncio.run(PoolChangeMiddleware(app)(scope, receive, send))
    return sent


@pytest.mark.parametrize(
    ("method", "path", "status", "copies"),
    [
        ("PATCH", "/api/v2/pools/rce_nsx", 200, True),
        ("POST", "/api/v2/pools", 201, True),
        ("DELETE", "/api/v2/pools/rce_esx", 204, True),
        ("PATCH", "/api/v2/pools", 200, True),  # the bulk endpoint
        ("PATCH", "/api/v2/pools/rce_nsx", 403, False),  # refused: nothing changed
        ("GET", "/api/v2/pools", 200, False),
        ("PATCH", "/api/v2/variables/x", 200, False),
    ],
)
def test_the_middleware_copies_after_a_successful_pool_change_only(
    synced: list[str], method: str, path: str, status: int, copies: bool
) -> None:
    sent = _call(method, path, status)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # passed through
    assert synced == (["sync"] if copies else [])


def test_the_copy_is_made_before_the_answer_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever changed the pool finds the new ceiling in force once answered."""
    order: list[str] = []
    monkeypatch.setattr(pool_ceilings, "sync", lambda: order.append("copied"))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        order.append("changed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: Any) -> None:
        order.append(message["type"])

    scope = {"type": "http", "method": "PATCH", "path": "/api/v2/pools/rce_nsx"}
    asyncio.run(PoolChangeMiddleware(app)(scope, None, send))
    assert order == ["changed", "copied", "http.response.start", "http.response.body"]
