"""`rce status`: where every SDDC of a wave stands, from the ledger, with failures and an ETA.

The ledger is `--ledger-url`, else `RCE_LEDGER_URL`, else the Airflow connection `rce_state`,
else the SQLite default under $AIRFLOW_HOME (the order the engine's tasks use). The ETA is
explained in rce_lib/status/snapshot.py. `--watch` redraws every few seconds until Ctrl-C, or,
with `--until-done`, until no SDDC is pending, running or waiting for a retry.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from rce_lib.ledger import Ledger
    from rce_lib.ledger.locate import LedgerLocation
    from rce_lib.status.snapshot import StatusSnapshot

DEFAULT_WATCH_S = 5.0


def register(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status",
        help="live progress of the waves from the ledger: SDDCs per phase and status, failures, ETA",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--wave", default=None, help="only this wave")
    status.add_argument("--rollout", default=None, help="only this rollout")
    status.add_argument("--run-id", default=None, help="only SDDCs last touched by this DAG run")
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=DEFAULT_WATCH_S,
        default=None,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C",
    )
    status.add_argument(
        "--until-done", action="store_true", help="with --watch: stop once every SDDC finished"
    )
    status.add_argument("--details", action="store_true", help="also list every SDDC")
    status.add_argument(
        "--format", choices=("table", "json"), default="table", help="table (default) or json"
    )
    status.add_argument("--ledger-url", default=None, help="ledger SQLAlchemy URL (default: see above)")
    status.add_argument(
        "--plan", type=Path, default=None, help="plan file, for max_parallel when a run did not record it"
    )
    status.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    from rce_lib.cli import CommandError
    from rce_lib.ledger import locate

    if args.watch is not None and args.watch <= 0:
        raise CommandError("--watch SECONDS must be > 0")
    if args.until_done and args.watch is None:
        args.watch = DEFAULT_WATCH_S
    parallelism = _plan_parallelism(args.plan)
    try:
        location = locate.locate(args.ledger_url)
        ledger = locate.open_ledger(location)
    except locate.LedgerUnavailable as err:
        raise CommandError(err.message) from None

    def take() -> StatusSnapshot:
        return snapshot(ledger, location, args, parallelism)

    if args.watch is None:
        _emit(take(), args)
        return 0
    return watch(take, args)


def snapshot(
    ledger: Ledger,
    location: LedgerLocation,
    args: argparse.Namespace,
    parallelism: dict[tuple[str, str], int],
) -> StatusSnapshot:
    from rce_lib.cli import CommandError
    from rce_lib.ledger import locate
    from rce_lib.status.collect import collect

    try:
        with locate.reading(location):
            return collect(
                ledger,
                now=datetime.now(UTC),
                rollout=args.rollout,
                wave=args.wave,
                run_id=args.run_id,
                plan_parallelism=parallelism,
                shown_url=location.shown,
            )
    except locate.LedgerUnavailable as err:
        raise CommandError(err.message) from None


def watch(take: Callable[[], StatusSnapshot], args: argparse.Namespace) -> int:
    """Redraw in place on a terminal (rich Live); elsewhere print each snapshot that changed."""
    from rich.live import Live

    from rce_lib.status.render import render

    console = _console()
    if not console.is_terminal or args.format == "json":
        last = ""
        while True:
            current = take()
            text = _text(current, args)
            body = text.split("\n", 1)[-1]  # the header carries the time: compare the rest
            if body != last:
                print(text, flush=True)
                last = body
            if args.until_done and current.done:
                return 0
            time.sleep(args.watch)
    with Live(console=console, auto_refresh=False, screen=False) as live:
        while True:
            current = take()
            live.update(render(current, details=args.details), refresh=True)
            if args.until_done and current.done:
                return 0
            time.sleep(args.watch)


def _emit(current: StatusSnapshot, args: argparse.Namespace) -> None:
    if args.format == "json":
        print(current.model_dump_json(indent=2))
        return
    from rce_lib.status.render import render

    _console().print(render(current, details=args.details))


def _text(current: StatusSnapshot, args: argparse.Namespace) -> str:
    if args.format == "json":
        return current.model_dump_json()
    from rce_lib.status.render import render

    console = _console()
    with console.capture() as captured:
        console.print(render(current, details=args.details))
    return str(captured.get()).rstrip("\n") + "\n"


def _console() -> Console:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)


def _plan_parallelism(path: Path | None) -> dict[tuple[str, str], int]:
    """max_parallel per (rollout, wave) from the plan; a plan given with --plan must load, the
    default one is used only if it is there."""
    from rce_lib.cli import CommandError
    from rce_lib.errors import PlanError
    from rce_lib.plan.cli import one_line_plan_error
    from rce_lib.plan.loader import default_plan_path, load_plan

    plan_path = path if path is not None else default_plan_path()
    if path is None and not plan_path.exists():
        return {}
    try:
        plan = load_plan(plan_path)
    except PlanError as err:
        raise CommandError(one_line_plan_error(err.message)) from None
    return {(plan.rollout, wave.name): wave.max_parallel for wave in plan.effective_waves()}
