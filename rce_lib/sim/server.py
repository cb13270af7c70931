"""Run the simulator: load or generate state, listen, flush counters periodically,
and shut down cleanly on SIGTERM/SIGINT (final flush, then exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from rce_lib.sim.app import SimApp
from rce_lib.sim.config import SimConfig
from rce_lib.sim.persist import Disk
from rce_lib.sim.state import FleetState

READY_LINE = "rce-sim listening on http://{host}:{port}"


async def _flush_loop(state: FleetState, interval: float) -> None:
    """Counters change on every request; write them at most every `interval` seconds."""
    while True:
        await asyncio.sleep(interval)
        state.flush(counters=True)


async def serve(config: SimConfig) -> None:
    disk = Disk(config.state_dir) if config.state_dir is not None else None
    state = FleetState(config, disk)
    state.bootstrap()
    runner = web.AppRunner(SimApp(state).build(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    print(READY_LINE.format(host=config.host, port=port), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flusher = asyncio.create_task(_flush_loop(state, config.persist_interval_s))
    try:
        await stop.wait()
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await runner.cleanup()
        state.counters_dirty = True
        state.flush(counters=True)
        if disk is not None:
            disk.close()
        print("rce-sim stopped", file=sys.stderr, flush=True)


def run(config: SimConfig) -> int:
    asyncio.run(serve(config))
    return 0
