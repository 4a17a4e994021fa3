"""The broker loads the CEL library without its REPL (broker/_cel.py): same evaluator, less start-up."""

from __future__ import annotations

import subprocess
import sys

from tests.brokerproc import ROOT


def run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_the_broker_and_its_simulator_start_without_the_cel_command_line() -> None:
    out = run(
        "import sys, broker.cli, broker.sim.run, broker.policy\n"
        "print(sorted(m for m in ('cel.cli', 'typer', 'prompt_toolkit') if m in sys.modules))\n"
        "import cel\n"
        "print(cel.evaluate('1 + size(xs)', {'xs': [1, 2]}), cel.compile('a > 1').execute({'a': 2}))"
    )
    assert out.splitlines() == ["[]", "3 True"]


def test_the_cel_library_loaded_first_is_kept_whole() -> None:
    # Code that imported `cel` itself before the broker keeps the package as its own __init__ made it.
    out = run("import cel, broker.policy, sys\nprint('cel.cli' in sys.modules, cel.stdlib.__name__)")
    assert out == "True cel.stdlib"


def test_cel_stdlib_still_imports_on_demand() -> None:
    out = run("import broker, cel.stdlib\nprint(callable(cel.stdlib.add_stdlib_to_context))")
    assert out == "True"
