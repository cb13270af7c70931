"""The `rce` console entry point. Each subcommand lives in its own module with a
`register(subparsers)` function; modules are imported only to build the parser,
and none of them imports Airflow at module level, so `rce --help` stays fast.

A subcommand that meets bad input (a plan or ledger that does not load, an API it
cannot reach) raises `CommandError`: `main` prints it as ONE line on stderr,
`rce <command>: <message>`, and exits 2; never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "rce_lib.sim.cli",
    "rce_lib.devenv.demo",
    "rce_lib.devenv.bench",
    "rce_lib.devenv.soak",
    "rce_lib.metrics.exporter",
    "rce_lib.plan.cli",
    "rce_lib.status.cli",
)
EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """Bad input for a subcommand: shown as one line, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rce", description="Rollout engine for SDDC fleets.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except CommandError as err:
        print(f"rce {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
