"""`rce exporter`: serve the rce metrics in Prometheus text format over HTTP.

Runs anywhere that can reach the ledger (beside the scheduler, or as its own
container); several replicas serve identical numbers. The same collector is
also mounted at /rce/metrics on the Airflow api-server by the rce plugin (that
route needs an Airflow login, so Prometheus scrapes this one).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from pydantic import TypeAdapter, ValidationError

from rce_lib.errors import ParamsError
from rce_lib.ledger import Ledger
from rce_lib.metrics import catalog
from rce_lib.metrics.collector import LedgerCollector

PHASE_MAX_ENV = "RCE_PHASE_MAX_SECONDS"
DEFAULT_PORT = 9464  # the OpenTelemetry/Prometheus exporter convention

_PhaseBounds = TypeAdapter(dict[str, float])


def phase_max_seconds(raw: str | None) -> dict[str, float]:
    """The stuck-phase bounds: the defaults, overridden per phase by a JSON object."""
    bounds = dict(catalog.DEFAULT_PHASE_MAX_SECONDS)
    if not raw:
        return bounds
    try:
        given = _PhaseBounds.validate_json(raw)
    except ValidationError as err:
        raise ParamsError(
            f"{PHASE_MAX_ENV} must be a JSON object of phase -> seconds: {err.errors()[0]['msg']}"
        ) from None
    for phase, seconds in given.items():
        if phase not in bounds:
            raise ParamsError(
                f"{PHASE_MAX_ENV}: unknown phase {phase!r} (known: {', '.join(sorted(bounds))})"
            )
        if not seconds > 0:
            raise ParamsError(f"{PHASE_MAX_ENV}.{phase} must be > 0, got {seconds}")
        bounds[phase] = seconds
    return bounds


def build_registry(ledger: Ledger, *, phase_max: Mapping[str, float] | None = None) -> CollectorRegistry:
    """A registry holding only the rce collector (no process or platform metrics of this process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(ledger, phase_max_seconds=phase_max))
    return registry


def _ledger_url(given: str | None) -> str:
    if given:
        return given
    from rce_lib.airflow_support.ledger_conn import ledger_url

    return ledger_url()


def run_exporter(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise SystemExit(f"rce exporter: --port must be 1..65535, got {args.port}")
    try:
        bounds = phase_max_seconds(os.environ.get(PHASE_MAX_ENV))
        ledger = Ledger(_ledger_url(args.ledger_url))
        ledger.ensure_schema()
    except ParamsError as err:
        print(f"rce exporter: {err}", file=sys.stderr)
        return 2
    registry = build_registry(ledger, phase_max=bounds)
    server, thread = start_http_server(args.port, addr=args.addr, registry=registry)
    print(f"rce exporter: serving http://{args.addr}:{args.port}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "exporter", help="serve the rce metrics (Prometheus text format) over HTTP"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--addr", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--ledger-url",
        default=None,
        help="SQLAlchemy URL of the ledger (default: $RCE_LEDGER_URL, the rce_state connection, SQLite)",
    )
    parser.set_defaults(func=run_exporter)


def dump(ledger_url: str) -> str:
    """The exposition text once (for `rce exporter --once`-style checks and tests)."""
    from prometheus_client import generate_latest

    return generate_latest(build_registry(Ledger(ledger_url))).decode()


__all__ = ["DEFAULT_PORT", "PHASE_MAX_ENV", "build_registry", "dump", "phase_max_seconds", "register"]
