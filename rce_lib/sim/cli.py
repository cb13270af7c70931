"""`rce sim ...`: serve the simulator, read its counters, inject faults, drift state.

    rce sim serve --host 127.0.0.1 --port 8600 --seed 42 --size 24 --time-scale 60 \\
                  --state-dir DIR --token TOKEN [--config FILE.yaml]
    rce sim counters --url URL --token TOKEN
    rce sim fault --url URL --token TOKEN '{"error_rate": 0.1}'
    rce sim drift --url URL --token TOKEN '{"kind": "host_disconnected", ...}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _token_default() -> str:
    return os.environ.get("RCE_SIM_TOKEN", "sim-token")


def register(subparsers: Any) -> None:
    """Add the `sim` subcommand (with serve/counters/fault/drift/state) to the rce parser."""
    sim = subparsers.add_parser("sim", help="The fleet simulator (fake SDDC Control API).")
    sub = sim.add_subparsers(dest="sim_command", required=True)

    serve = sub.add_parser("serve", help="Run the simulator HTTP server.")
    serve.add_argument("--host", default=None, help="default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default 8600; 0 picks a free port")
    serve.add_argument("--seed", type=int, default=None, help="default 42")
    serve.add_argument("--size", type=int, default=None, help="number of SDDCs, default 24")
    serve.add_argument(
        "--time-scale",
        dest="time_scale",
        type=float,
        default=None,
        help="simulated seconds per real second, default 60",
    )
    serve.add_argument(
        "--state-dir",
        dest="state_dir",
        type=Path,
        default=None,
        help="persist state here; existing state wins over the seed",
    )
    serve.add_argument("--token", default=None, help="bearer token (env RCE_SIM_TOKEN, else sim-token)")
    serve.add_argument("--config", type=Path, default=None, help="YAML file of SimConfig fields")
    serve.set_defaults(func=_serve)

    for name, helptext, func in (
        ("counters", "Print the simulator's counters as JSON.", _counters),
        ("state", "Print the whole simulated fleet as JSON.", _state),
    ):
        p = sub.add_parser(name, help=helptext)
        _client_args(p)
        p.set_defaults(func=func)

    fault = sub.add_parser("fault", help="Merge faults (JSON object) into the current ones.")
    _client_args(fault)
    fault.add_argument("patch", help='e.g. \'{"error_rate": 0.1}\'; {"reset": true} clears first')
    fault.set_defaults(func=_fault)

    drift = sub.add_parser("drift", help="Change an SDDC out of band.")
    _client_args(drift)
    drift.add_argument("patch", help='e.g. \'{"kind": "host_disconnected", "sddc_id": ..., "host_id": ...}\'')
    drift.set_defaults(func=_drift)


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("RCE_SIM_URL", "http://127.0.0.1:8600"))
    parser.add_argument("--token", default=None)


def _serve(args: argparse.Namespace) -> int:
    from rce_lib.sim.config import load_config
    from rce_lib.sim.server import run

    overrides = {
        "host": args.host,
        "port": args.port,
        "seed": args.seed,
        "size": args.size,
        "time_scale": args.time_scale,
        "state_dir": args.state_dir,
        "token": args.token or (None if args.config else _token_default()),
    }
    config = load_config(args.config, overrides)
    if args.token is None and "RCE_SIM_TOKEN" in os.environ:
        config = config.model_copy(update={"token": os.environ["RCE_SIM_TOKEN"]})
    return run(config)


def request(url: str, token: str, method: str = "GET", body: Any = None) -> Any:
    """Tiny stdlib client for the admin API (no extra dependency for the CLI)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {url}: {exc.code} {exc.read().decode(errors='replace')}") from None


def _print(value: Any) -> int:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def _counters(args: argparse.Namespace) -> int:
    return _print(request(f"{args.url.rstrip('/')}/sim/counters", args.token or _token_default()))


def _state(args: argparse.Namespace) -> int:
    return _print(request(f"{args.url.rstrip('/')}/sim/state", args.token or _token_default()))


def _fault(args: argparse.Namespace) -> int:
    return _print(
        request(
            f"{args.url.rstrip('/')}/sim/faults",
            args.token or _token_default(),
            "POST",
            json.loads(args.patch),
        )
    )


def _drift(args: argparse.Namespace) -> int:
    return _print(
        request(
            f"{args.url.rstrip('/')}/sim/drift",
            args.token or _token_default(),
            "POST",
            json.loads(args.patch),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rce_lib.sim ...`: the same commands without the rce entry point."""
    parser = argparse.ArgumentParser(prog="rce")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)
