"""Code shape (issue 13): modules of at most 400 lines, functions of at most 60, in broker/ and
adapters/ (the generated gRPC stubs in broker/api/ excepted). Run by /work/land.sh for everyone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    out = []
    for top in ("broker", "adapters"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.relative_to(ROOT).parts[:2] != ("broker", "api"):
                out.append(path)
    return out


def long_modules(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(root)}: {n} lines")
    return found


def long_functions(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}(): {n} lines")
    return found


def test_modules_are_at_most_400_lines() -> None:
    found = long_modules(sources())
    assert not found, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(found)


def test_functions_are_at_most_60_lines() -> None:
    found = long_functions(sources())
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


def test_the_limits_catch_an_offender(tmp_path: Path) -> None:
    # The checks must be able to fail: a long function in a long module is named, with its size.
    body = "".join(f"    x{i} = {i}\n" for i in range(70))
    big = tmp_path / "big.py"
    big.write_text("def f():\n" + body + "\n" * 400, encoding="utf-8")
    assert long_modules([big], tmp_path) == ["big.py: 471 lines"]
    assert long_functions([big], tmp_path) == ["big.py:1 f(): 71 lines"]
