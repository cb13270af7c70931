"""The `rce` console entry point. Each subcommand lives in its own module with a
`register(subparsers)` function; modules are imported only to build the parser,
and none of them imports Airflow at module level, so `rce --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "rce_lib.sim.cli",
    "rce_lib.devenv.demo",
    "rce_lib.devenv.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rce", description="Rollout engine for SDDC fleets.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
