"""`rce plan`: what each wave of the rollout plan would take from the live inventory, and why
every other SDDC is left out, with the canary slice and the next maintenance windows.

The inventory is read through the engine's own `SddcApiHook`: by default from the Airflow
connection `sddc_api` (e.g. `AIRFLOW_CONN_SDDC_API`), or from `--api-url` with the bearer
token in the environment variable `RCE_API_TOKEN` (never on the command line, never printed).
Only GETs are sent: the release record(s) and the SDDC list. Claims held by other waves come
from the ledger when there is one (`--ledger-url`, `RCE_LEDGER_URL`, the `rce_state`
connection, or the SQLite default under $AIRFLOW_HOME; `--no-ledger` skips it).
Selection is `cohort_for_run`, the function the wave's resolve_cohort task runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rce_lib.hooks.sddc_api import SddcApiHook
    from rce_lib.plan.preview import PlanPreview, WavePreview

TOKEN_ENV = "RCE_API_TOKEN"
DEFAULT_CONN_ID = "sddc_api"
_URL_CONN_ID = "rce_cli_sddc_api"


def register(subparsers: Any) -> None:
    plan = subparsers.add_parser(
        "plan",
        help="preview the rollout plan against the live inventory (what each wave would take, and why not)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan.add_argument(
        "--plan",
        type=Path,
        default=None,
        help="plan file (default: $RCE_ROLLOUT_PLAN or include/rollout.yaml)",
    )
    plan.add_argument(
        "--wave", default=None, help="show only this wave (earlier waves still take their share first)"
    )
    plan.add_argument(
        "--release", default=None, metavar="X.Y.Z", help="target release for every wave (default: the plan's)"
    )
    plan.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    plan.add_argument(
        "--conn-id", default=DEFAULT_CONN_ID, help="Airflow connection of the SDDC API (default sddc_api)"
    )
    plan.add_argument(
        "--api-url",
        default=None,
        help=f"SDDC API base URL instead of the connection; token from ${TOKEN_ENV}",
    )
    plan.add_argument(
        "--ledger-url", default=None, help="ledger SQLAlchemy URL (for claims held by running waves)"
    )
    plan.add_argument("--no-ledger", action="store_true", help="ignore the ledger (no claims)")
    plan.add_argument(
        "--now", default=None, metavar="ISO", help="compute windows from this UTC time (default: now)"
    )
    plan.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from rce_lib.api.models import VERSION_RE
    from rce_lib.cli import CommandError
    from rce_lib.errors import PlanError
    from rce_lib.plan.loader import default_plan_path, load_plan
    from rce_lib.plan.preview import plan_preview, targets

    plan_path = args.plan if args.plan is not None else default_plan_path()
    try:
        plan = load_plan(plan_path)
        if args.wave is not None:
            plan.wave(args.wave)
    except PlanError as err:
        raise CommandError(one_line_plan_error(err.message)) from None
    if args.release is not None and not VERSION_RE.fullmatch(args.release):
        raise CommandError(f"--release {args.release!r} is not X.Y.Z")
    now = _now(args.now)
    hook = _hook(args)
    url = _base_url(hook, args)
    upgrade_from, inventory = _fetch(hook, url, targets(plan, args.release))
    claims, claims_source = _claims(args)
    preview = plan_preview(
        plan,
        inventory,
        upgrade_from=upgrade_from,
        now=now,
        active_claims=claims,
        target_version=args.release,
        only_wave=args.wave,
        plan_path=str(plan_path),
        api_url=url,
        claims_source=claims_source,
    )
    if args.format == "json":
        print(preview.model_dump_json(indent=2))
    else:
        print_table(preview, now)
    return 0


def one_line_plan_error(message: str) -> str:
    """A PlanError's message (a head line and one `  - path: problem` line per problem) on one line."""
    head, *items = [line.strip() for line in message.splitlines() if line.strip()]
    if not items:
        return head
    return f"{head.rstrip(':')}: " + "; ".join(item.removeprefix("- ") for item in items)


def _now(text: str | None) -> datetime:
    from rce_lib.cli import CommandError

    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--now {text!r} is not an ISO date-time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hook(args: argparse.Namespace) -> SddcApiHook:
    """The engine's hook, on the named connection or on a connection made from --api-url."""
    from rce_lib.cli import CommandError
    from rce_lib.hooks.retry import RetryPolicy
    from rce_lib.hooks.sddc_api import SddcApiHook

    # A person is waiting: a few quick tries, not the tasks' minute of patience.
    reads = RetryPolicy("cli_reads", attempts=3, deadline_s=15.0, base_s=0.5, cap_s=2.0)
    logging.getLogger("rce_lib.hooks").setLevel(logging.ERROR)  # retries are not the user's business
    conn_id = args.conn_id
    if args.api_url:
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise CommandError(f"--api-url needs the API's bearer token in ${TOKEN_ENV}")
        if not args.api_url.startswith(("http://", "https://")):
            raise CommandError(f"--api-url {args.api_url!r} must start with http:// or https://")
        # A connection of this process only, so that the hook's own connection code builds the session.
        conn = {"conn_type": "http", "host": args.api_url.rstrip("/"), "password": token}
        os.environ[f"AIRFLOW_CONN_{_URL_CONN_ID.upper()}"] = json.dumps(conn)
        conn_id = _URL_CONN_ID
    return SddcApiHook(sddc_api_conn_id=conn_id, reads=reads)


def _base_url(hook: SddcApiHook, args: argparse.Namespace) -> str:
    from rce_lib.cli import CommandError
    from rce_lib.errors import RceError

    try:
        return hook.base_url
    except RceError as err:
        raise CommandError(f"SDDC API connection {args.conn_id!r}: {err.message}") from None
    except Exception as err:  # Airflow's "conn_id isn't defined", a malformed URI: one line
        hint = f" (define AIRFLOW_CONN_{args.conn_id.upper()}, or pass --api-url with ${TOKEN_ENV})"
        raise CommandError(
            f"SDDC API connection {args.conn_id!r}: {type(err).__name__}: {err}{hint}"
        ) from None


def _fetch(hook: SddcApiHook, url: str, versions: list[str]) -> tuple[dict[str, list[str]], list[Any]]:
    """The releases' upgrade paths and the whole inventory (GETs only)."""
    from rce_lib.cli import CommandError
    from rce_lib.errors import ApiError, RceError

    upgrade_from: dict[str, list[str]] = {}
    try:
        for version in versions:
            try:
                upgrade_from[version] = list(hook.get_release(version).upgrade_from)
            except ApiError as err:
                if err.status == 404:
                    raise CommandError(f"release {version} is unknown to the SDDC API at {url}") from None
                raise
        inventory = list(hook.list_sddcs())
    except ApiError as err:
        if err.status is None:
            raise CommandError(
                f"cannot reach the SDDC API at {url}: {_transport_reason(url, err.message)}"
            ) from None
        raise CommandError(f"the SDDC API at {url} answered an error: {err}") from None
    except RceError as err:
        raise CommandError(f"the SDDC API at {url}: {err}") from None
    finally:
        hook.close()
    return upgrade_from, inventory


def _transport_reason(url: str, message: str) -> str:
    """Why no answer came: the socket error of one plain TCP connect (e.g. `connection refused`),
    since the transport error's own text is cut short; else that text."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=5):
            pass
    except socket.gaierror as err:
        return f"host {parts.hostname!r} not found ({err.strerror or err})"
    except OSError as err:
        return (err.strerror or str(err) or type(err).__name__).lower()
    return message


def _claims(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Active claims of the ledger, and a description of where they came from."""
    from rce_lib.cli import CommandError
    from rce_lib.ledger import locate

    if args.no_ledger:
        return {}, "none (--no-ledger)"
    try:
        location = locate.locate(args.ledger_url)
        if not locate.exists(location):
            return {}, f"none (no ledger yet at {location.shown})"
        ledger = locate.open_ledger(location)
        with locate.reading(location):
            claims = ledger.active_claims()
    except locate.LedgerUnavailable as err:
        raise CommandError(err.message) from None
    return dict(claims), f"{location.shown} (from {location.source})"


# ---------------------------------------------------------------- the table


def print_table(preview: PlanPreview, now: datetime) -> None:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)
    console.print(
        f"[bold]rollout {preview.rollout}[/bold]: release {preview.target_version or preview.release}, "
        f"waves in order: {' → '.join(preview.order)}"
    )
    console.print(
        f"inventory: {preview.api_url}; claims: {preview.claims_source}; "
        f"windows from {now:%a %Y-%m-%d %H:%M} UTC"
    )
    console.print(
        "[dim]each wave is resolved after the earlier ones took their SDDCs "
        "(CLAIMED_BY_OTHER_WAVE: taken by an earlier wave)[/dim]"
    )
    for wave in preview.waves:
        console.print()
        _print_wave(console, wave, now)


def _print_wave(console: Any, wave: WavePreview, now: datetime) -> None:
    from collections import Counter

    from rich.table import Table

    from rce_lib.plan.preview import opens_in

    after = f", after {wave.after}" if wave.after else ""
    console.print(
        f"[bold]{wave.order}. wave {wave.wave}[/bold] → {wave.target_version} "
        f"(schedule {wave.schedule}{after}; size {wave.size}, canary {wave.canary_size}, "
        f"max_parallel {wave.max_parallel}): [bold]{len(wave.members)} SDDC(s)[/bold], "
        f"{len(wave.canary_ids)} canary; upgrade path from {', '.join(wave.upgrade_from) or '-'}"
    )
    if wave.members:
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("#", "SDDC", "slice", "region", "version", "window (UTC)", "next opening"):
            table.add_column(column, no_wrap=True)
        for index, member in enumerate(wave.members, start=1):
            window = member.maintenance_window
            spec = (
                f"{_DAYS[window.day_of_week]} {window.start_hour_utc:02d}:00 +{window.duration_hours}h"
                if window
                else "none"
            )
            table.add_row(
                str(index),
                member.sddc_id,
                "[yellow]canary[/yellow]" if member.canary else "bulk",
                member.region,
                member.version,
                spec,
                opens_in(window, now),
            )
        console.print(table)
    else:
        console.print("  (no SDDC would be taken)")
    if wave.excluded:
        counts = Counter(item.reason.value for item in wave.excluded)
        console.print(
            f"  excluded {len(wave.excluded)}: "
            + ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
        )
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("  SDDC", "reason", "detail"):
            table.add_column(column, no_wrap=True)
        for item in wave.excluded:
            table.add_row(f"  {item.sddc_id}", item.reason.value, item.detail)
        console.print(table)
    else:
        console.print("  excluded: none")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
