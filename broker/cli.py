"""`szb`: the broker's command line. Each command group lives in `broker.commands.*`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from broker.commands import COMMAND_GROUPS


class UsageError(Exception):
    """Wrong arguments: exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The full `szb` parser; every command module registers its own subcommands."""
    parser = argparse.ArgumentParser(prog="szb", description="Shangzhuang Broker")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMAND_GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 ok, 1 error (message on stderr), 2 usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except UsageError as exc:
        print(f"szb: usage error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
