"""`szb`: the broker's command line. Each command group lives in `broker.commands.*`."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence

from broker.commands import groups
from broker.commands._args import UsageError, join_dashed_values


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `szb` parser; every command module registers its own subcommands. Given the
    arguments, only the module of the command they name (the full parser without one)."""
    parser = argparse.ArgumentParser(prog="szb", description="Shangzhuang Broker")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = argv[0] if argv and not argv[0].startswith("-") else None
    for register in groups(command):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 ok, 1 error (message on stderr), 2 usage. Without `argv` it is the
    process's command (`szb ...`), which ends when it returns; callers in a process that goes on
    (tests) pass theirs."""
    ending = argv is None
    argv = join_dashed_values(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    code = _run(args)
    if ending and args.command not in LONG_LIVED:
        # The process ends now: its objects need no last collections. Python's at exit walked
        # all of them: ~240k after a simulation of the 8k trace (0.3-1 s of its wall time), and
        # the ~50k that the imports alone make for any command (tens of ms of its CPU).
        gc.freeze()
    return code


LONG_LIVED = frozenset({"serve"})
"""Commands that run until stopped: their heap turns over for days and their exit is a shutdown,
whose last collection still finalizes what they held in cycles."""


def _run(args: argparse.Namespace) -> int:
    """The command's own exit code, or the one its usage error, ^C or a closed stdout gives."""
    try:
        code: int = args.handler(args)
    except UsageError as exc:
        print(f"szb: usage error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _closed_pipe()
    return code


EXIT_CLOSED_PIPE = 141
"""128 + SIGPIPE: what a shell reports for `cat` and friends when the reader goes away."""


def _closed_pipe() -> int:
    """The reader (`| head`) closed our stdout: stop quietly, as Unix tools do."""
    # Python flushes stdout again at exit; point it at /dev/null so that cannot fail too.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


if __name__ == "__main__":
    sys.exit(main())
