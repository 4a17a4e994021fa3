"""Load the CEL library's evaluator without its command-line interface.

The `common-expression-language` package's `__init__` imports its REPL (typer, prompt_toolkit,
rich, pygments): 0.1-0.3 s of CPU on every start of `szb`, the broker, a simulation or a bench
script, for nothing the broker uses (it compiles and evaluates expressions). `szb` used to stub
`cel.cli` with an empty module instead, which only its own entry point did and which left an
empty `cel.cli` behind for any other code in the process. Here the package is registered
under its own name with its Rust core's names (what its `__init__` re-exports) and its
`__init__` skipped; `cel.stdlib` and `cel.cli` still import on demand. A `cel` already
imported is left as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def load_cel() -> ModuleType:
    """The `cel` package with its core's names, imported without `cel.cli`."""
    loaded = sys.modules.get("cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("the CEL library (common-expression-language) is not installed")
    package = importlib.util.module_from_spec(spec)
    sys.modules["cel"] = package
    try:
        core = importlib.import_module("cel.cel")
    except BaseException:
        del sys.modules["cel"]
        raise
    for name in getattr(core, "__all__", [n for n in dir(core) if not n.startswith("_")]):
        setattr(package, name, getattr(core, name))
    return package
