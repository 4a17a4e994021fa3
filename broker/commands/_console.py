"""The console every command prints through: rich's, with a closed stdout left to `broker.cli`."""

from __future__ import annotations

from rich.console import Console as RichConsole


class Console(RichConsole):
    """rich's console, except when the reader closes stdout (`szb list | head`): rich exits 1
    there; raising `BrokenPipeError` lets `broker.cli.main` end quietly with 141, as for JSON."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError
