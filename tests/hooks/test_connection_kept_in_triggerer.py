"""In the triggerer the SDDC API connection is read once a minute for every hook, not once per
hook (rce_lib.airflow_support.lookup_cache), and read again as soon as the API refuses the
token it gave."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from _fake_api import TOKEN, FakeApi, Reply, problem, sddc_json, task_json
from _fake_clock import FakeClock
from airflow.providers.http.hooks.http import HttpHook

from rce_lib.airflow_support import lookup_cache
from rce_lib.errors import ApiError, Reason
from rce_lib.hooks import sddc_api_async
from rce_lib.hooks.sddc_api import SddcApiAsyncHook, SddcApiHook


@pytest.fixture
def kept() -> Iterator[lookup_cache.LookupCache]:
    """This process keeps lookups as the triggerer does."""
    cache = lookup_cache.LookupCache(60.0)
    lookup_cache.use(cache)
    yield cache
    lookup_cache.use(None)


def _async_reads(mocker: Any) -> Any:
    return mocker.spy(sddc_api_async, "get_async_connection")


def test_async_hooks_share_one_read_of_the_connection(
    api: FakeApi, connect: Any, clock: FakeClock, kept: lookup_cache.LookupCache, mocker: Any
) -> None:
    reads = _async_reads(mocker)
    api.script(Reply(200, task_json("t-1")), Reply(200, task_json("t-2")), Reply(200, task_json("t-3")))
    for task_id in ("t-1", "t-2", "t-3"):  # three waits, three triggers, three hooks
        hook = SddcApiAsyncHook(sleep=clock.asleep, clock=clock)
        assert asyncio.run(hook.get_task(task_id)).id == task_id
    assert reads.call_count == 1
    assert all(seen.headers["Authorization"] == f"Bearer {TOKEN}" for seen in api.seen)


def test_a_refused_token_is_read_again_by_the_next_hook(
    api: FakeApi, connect: Any, clock: FakeClock, kept: lookup_cache.LookupCache, mocker: Any
) -> None:
    reads = _async_reads(mocker)
    api.script(Reply(200, task_json("t-1")))
    asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-1"))
    connect(password="rotated-token")  # the token was rotated; the kept connection is stale
    api.script(problem(401))
    with pytest.raises(ApiError) as refused:
        asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-2"))
    assert refused.value.reason is Reason.AUTH_FAILED
    api.script(Reply(200, task_json("t-3")))
    asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-3"))
    assert reads.call_count == 2
    assert api.seen[-1].headers["Authorization"] == "Bearer rotated-token"


def test_a_kept_connection_is_read_again_after_its_time(
    api: FakeApi, connect: Any, clock: FakeClock, mocker: Any
) -> None:
    now = [0.0]
    lookup_cache.use(lookup_cache.LookupCache(60.0, clock=lambda: now[0]))
    try:
        reads = _async_reads(mocker)
        api.script(Reply(200, task_json("t-1")), Reply(200, task_json("t-2")), Reply(200, task_json("t-3")))
        asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-1"))
        now[0] = 59.0
        asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-2"))
        now[0] = 61.0
        asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-3"))
        assert reads.call_count == 2
    finally:
        lookup_cache.use(None)


def test_without_the_cache_every_hook_reads_the_connection(
    api: FakeApi, connect: Any, clock: FakeClock, mocker: Any
) -> None:
    lookup_cache.use(None)  # a worker's task process
    reads = _async_reads(mocker)
    api.script(Reply(200, task_json("t-1")), Reply(200, task_json("t-2")))
    asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-1"))
    asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-2"))
    assert reads.call_count == 2


def test_sync_hooks_share_one_read_and_a_refused_token_is_read_again(
    api: FakeApi, connect: Any, kept: lookup_cache.LookupCache, mocker: Any
) -> None:
    reads = mocker.spy(HttpHook, "get_connection")
    api.script(Reply(200, sddc_json()), Reply(200, sddc_json()))
    for _ in range(2):  # two phases going on in the triggerer
        hook = SddcApiHook()
        assert hook.get_sddc("sddc-1").id == "sddc-1"
        hook.close()
    assert reads.call_count == 1
    connect(password="rotated-token")
    api.script(problem(401))
    with pytest.raises(ApiError):
        SddcApiHook().get_sddc("sddc-1")
    api.script(Reply(200, sddc_json()))
    assert SddcApiHook().get_sddc("sddc-1").id == "sddc-1"
    assert reads.call_count == 2
    assert api.seen[-1].headers["Authorization"] == "Bearer rotated-token"


def test_a_kept_connection_masks_its_extras_once(
    api: FakeApi, connect: Any, kept: lookup_cache.LookupCache, mocker: Any
) -> None:
    """In the triggerer every mask is a blocking request to its supervisor: the extras of a kept
    connection are parsed and masked when it is read, not again for every session built on it."""
    from airflow.sdk import log as sdk_log

    masks = mocker.spy(sdk_log, "mask_secret")
    connect(ca_bundle="/etc/ssl/certs/ca.pem", read_timeout=7)
    api.script(*(Reply(200, sddc_json()) for _ in range(3)))
    counts = []
    for _ in range(3):  # three phases going on in the triggerer, a session each
        hook = SddcApiHook()
        assert hook.get_sddc("sddc-1").id == "sddc-1"
        assert hook._http.settings.read_timeout == 7  # the extras still reach the session
        hook.close()
        counts.append(sum(1 for c in masks.call_args_list if isinstance(c.args[0], dict)))
    assert counts[0] >= 1
    assert counts == [counts[0]] * 3  # the read's masks, and none for the sessions after it
