"""The triggerer keeps what it reads over and over for a while; nothing else keeps anything."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from rce_lib.airflow_support import ledger_conn, lookup_cache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def no_process_cache() -> Iterator[None]:
    yield
    lookup_cache.use(None)


def test_a_value_is_kept_for_its_time_then_read_again(clock: Clock) -> None:
    cache = lookup_cache.LookupCache(60.0, clock=clock)
    reads: list[int] = []

    def fetch() -> int:
        reads.append(1)
        return len(reads)

    assert cache.get("k", fetch) == 1
    clock.now = 59.9
    assert cache.get("k", fetch) == 1
    clock.now = 60.1
    assert cache.get("k", fetch) == 2
    cache.forget("k")
    assert cache.get("k", fetch) == 3
    assert cache.get("other", fetch) == 4


def test_a_failed_lookup_is_not_kept(clock: Clock) -> None:
    cache = lookup_cache.LookupCache(60.0, clock=clock)
    calls: list[int] = []

    def fetch() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the supervisor did not answer")
        return "ok"

    with pytest.raises(RuntimeError):
        cache.get("k", fetch)
    assert cache.get("k", fetch) == "ok" and len(calls) == 2


def test_threads_that_miss_together_share_one_fetch(clock: Clock) -> None:
    """Eight phase threads find the kept value expired at once: one request, not eight."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    looked = threading.Semaphore(0)  # one release per look at the kept values

    def counting_clock() -> float:
        looked.release()
        return clock()

    cache = lookup_cache.LookupCache(5.0, clock=counting_clock)
    started, release = threading.Event(), threading.Event()
    fetches: list[int] = []

    def fetch() -> str:
        fetches.append(1)
        started.set()
        release.wait(5)  # the supervisor is slow to answer
        return "off"

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(cache.get, "switch", fetch)
        assert started.wait(5)
        rest = [pool.submit(cache.get, "switch", fetch) for _ in range(7)]
        for _ in range(8):  # every thread has found the value missing before the answer comes
            assert looked.acquire(timeout=5)
        release.set()
        assert [f.result(5) for f in (first, *rest)] == ["off"] * 8
    assert len(fetches) == 1

    # a fetch that fails is not shared: the next thread fetches again
    def no_answer() -> str:
        raise RuntimeError("no answer")

    cache.forget("switch")
    with pytest.raises(RuntimeError):
        cache.get("switch", no_answer)
    assert cache.get("switch", lambda: "on") == "on"


def test_async_lookups_are_kept_too(clock: Clock) -> None:
    cache = lookup_cache.LookupCache(60.0, clock=clock)
    reads: list[int] = []

    async def fetch() -> int:
        reads.append(1)
        return len(reads)

    async def main() -> list[int]:
        return [await cache.aget("k", fetch), await cache.aget("k", fetch)]

    assert asyncio.run(main()) == [1, 1]


@pytest.mark.parametrize(
    ("argv", "triggerer"),
    [
        (["/venv/bin/airflow", "triggerer"], True),
        (["/venv/bin/airflow", "triggerer", "--capacity", "1000"], True),
        (["/venv/bin/airflow", "scheduler"], False),
        (["/venv/bin/airflow", "tasks", "run", "triggerer"], False),
        (["/venv/bin/pytest", "tests"], False),
        (["python"], False),
    ],
)
def test_only_the_triggerer_keeps_lookups(argv: list[str], triggerer: bool) -> None:
    assert lookup_cache.is_triggerer(argv) is triggerer


@pytest.mark.parametrize(("raw", "ttl"), [("", 60.0), ("15", 15.0), ("0", 0.0), ("-3", 0.0), ("soon", 60.0)])
def test_the_time_a_lookup_is_kept_is_configurable(raw: str, ttl: float) -> None:
    assert lookup_cache.ttl_s({lookup_cache.TTL_ENV: raw}) == ttl


def test_outside_the_triggerer_every_lookup_is_read() -> None:
    lookup_cache.use(None)
    reads: list[int] = []
    for _ in range(3):
        lookup_cache.get("k", lambda: reads.append(1))
    assert len(reads) == 3


def test_the_ledger_url_from_the_connection_is_read_once_a_minute_in_the_triggerer(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: object
) -> None:
    monkeypatch.delenv(ledger_conn.LEDGER_URL_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setenv(
        "AIRFLOW_CONN_RCE_STATE", '{"conn_type": "generic", "extra": {"url": "sqlite:////tmp/a.db"}}'
    )
    lookup_cache.use(lookup_cache.LookupCache(60.0, clock=clock))
    assert ledger_conn.ledger_url() == "sqlite:////tmp/a.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_RCE_STATE", '{"conn_type": "generic", "extra": {"url": "sqlite:////tmp/b.db"}}'
    )
    assert ledger_conn.ledger_url() == "sqlite:////tmp/a.db"  # kept
    clock.now = 61.0
    assert ledger_conn.ledger_url() == "sqlite:////tmp/b.db"
    # RCE_LEDGER_URL is never kept: it is read from this process's environment, no request
    monkeypatch.setenv(ledger_conn.LEDGER_URL_ENV, "sqlite:////tmp/c.db")
    assert ledger_conn.ledger_url() == "sqlite:////tmp/c.db"


def test_the_triggerer_reads_a_kill_switch_at_most_five_seconds_late(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """Each check is four requests to the triggerer's supervisor (two Variables, two masks), so
    the triggerer keeps a switch's value for a few seconds, never for the connection's minute."""
    from rce_lib.airflow_support import kill_switch

    lookup_cache.use(lookup_cache.LookupCache(60.0, clock=clock))
    monkeypatch.delenv("AIRFLOW_VAR_RCE_KILL_SWITCH", raising=False)
    assert kill_switch.engaged("w1") is None
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH", "bad NSX build, INC-1")
    clock.now = kill_switch.KEPT_S - 0.5
    assert kill_switch.engaged("w1") is None  # still the value read 4.5 s ago
    clock.now = kill_switch.KEPT_S + 0.5
    assert kill_switch.engaged("w1") == "rce_kill_switch is set (bad NSX build, INC-1)"
    lookup_cache.use(None)  # a worker reads it at every check
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH_W1", "off")
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH", "off")
    assert kill_switch.engaged("w1") is None
