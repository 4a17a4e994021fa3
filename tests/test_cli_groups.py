"""`szb CMD` registers only CMD's command module (issue 15, start-up): the command -> module
map agrees with what every module registers, and a simulate run imports no other group."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from broker.cli import build_parser
from broker.commands import COMMAND_MODULE, GROUPS


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_each_command_maps_to_the_module_that_registers_it() -> None:
    registered: dict[str, str] = {}
    for name in GROUPS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"broker.commands.{name}").register(sub)
        registered.update(dict.fromkeys(_commands(parser), name))
    assert registered == COMMAND_MODULE
    assert _commands(build_parser()) == list(registered)  # the full parser: every command, in order


def test_a_named_command_gets_only_its_own_module_and_parses_the_same() -> None:
    argv = ["simulate", "--synthetic", "10", "--policy", "p.yaml", "--output", "json"]
    assert _commands(build_parser(argv)) == ["simulate"]
    assert vars(build_parser(argv).parse_args(argv)) == vars(build_parser().parse_args(argv))
    assert _commands(build_parser(["--help"])) == _commands(build_parser())
    assert _commands(build_parser(["no-such-command"])) == _commands(build_parser())


def test_szb_simulate_imports_no_other_command_group() -> None:
    code = (
        "import sys; from broker.cli import build_parser; build_parser(['simulate']); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('broker.commands.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # (`broker.commands._args`, the argument types `szb` itself reads, is no command group)
    groups = [m for m in out.split() if not m.rpartition(".")[2].startswith("_")]
    assert groups == ["broker.commands.simulate"]


def test_szb_simulate_imports_no_adapter_nor_store() -> None:
    """The simulator reads two adapter sentences and a store type: importing the Slurm and local
    adapters (httpx too) and the job store for them cost every simulate run ~0.15 s CPU at start."""
    code = (
        "import sys; import broker.commands.simulate, broker.sim.run, broker.policytest; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('adapters', 'httpx')"
        " or m.startswith('broker.store'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["adapters", "adapters.base"]


SIMULATE = [
    "simulate", "--synthetic", "5", "--policy", "configs/policy-sim.yaml", "--no-lower-bound",
    "--baselines", "none", "--output", "json",
]


def _frozen_after(main_call: str, argv: list[str] = SIMULATE, exit_code: str = "0") -> int:
    code = (
        f"import gc, sys; from broker.cli import main; sys.argv = ['szb', *{argv!r}]; "
        f"code = {main_call}; print(code, gc.get_freeze_count(), file=sys.stderr)"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    code, frozen = got.split()[-2:]
    assert code == exit_code, got
    return int(frozen)


def test_szb_simulate_as_the_process_leaves_its_objects_to_the_exit() -> None:
    """`szb simulate` ends the process: its objects are frozen out of the collector (Python at
    exit walked ~240k of them); a caller passing its own arguments goes on and keeps collecting."""
    assert _frozen_after("main()") > 10_000
    assert _frozen_after("main(sys.argv[1:])") == 0


def test_every_short_command_leaves_its_objects_to_the_exit_but_serve() -> None:
    """The rule is every command's (the imports alone leave ~50k tracked objects for Python's
    last collection); `szb serve`, whose exit is a shutdown, keeps collecting."""
    assert _frozen_after("main()", ["policy", "check", "configs/policy.yaml"]) > 10_000
    assert _frozen_after("main()", ["health", "--server", "127.0.0.1:1", "--timeout", "0.5"], "1") > 10_000
    assert _frozen_after("main(sys.argv[1:])", ["policy", "check", "configs/policy.yaml"]) == 0
    assert _frozen_after("main()", ["serve", "--config", "/nonexistent/szb.yaml"], "1") == 0
