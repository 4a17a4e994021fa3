"""Imported first by `szb`: keeps modules the broker never uses out of every start-up.

The `cel` package imports its interactive command line (`cel.cli`: prompt_toolkit, typer,
pygments) from its `__init__`, ~0.2 s of CPU per `szb` run; the broker only compiles and
evaluates expressions (`cel.Context`, `cel.compile`), so `cel.cli` is an empty module here.
"""

from __future__ import annotations

import sys
import types

sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
