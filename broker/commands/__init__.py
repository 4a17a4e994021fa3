"""Command groups of `szb`; each module exposes `register(subparsers)`.

`szb CMD` imports only CMD's module (`groups`): the other groups' imports (the gRPC client,
TLS, the server's configuration, ~0.15-0.2 s of CPU) are left out of every start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Register = Callable[[Any], None]

GROUPS = (
    "jobs", "operator", "policy", "hardware", "explain", "simulate", "tls", "audit", "health", "view",
    "backup", "drain",
)
"""The command modules, in `szb --help` order."""

COMMAND_MODULE = {
    **dict.fromkeys(("serve", "submit", "get", "list", "cancel", "watch"), "jobs"),
    **dict.fromkeys(("token", "status", "spend"), "operator"),
    **{
        name: name
        for name in ("policy", "hardware", "explain", "simulate", "tls", "audit", "health", "backup")
    },
    **dict.fromkeys(("logs", "offers"), "view"),
    **dict.fromkeys(("drain", "undrain"), "drain"),
}
"""Each top-level command's module (tests/test_cli_groups.py checks it against every module's
own registrations); a command not listed here registers every group, so nothing breaks."""


def groups(command: str | None = None) -> list[Register]:
    """The `register` functions to call: only `command`'s module when it is known, else all."""
    names = (COMMAND_MODULE[command],) if command in COMMAND_MODULE else GROUPS
    return [importlib.import_module(f"broker.commands.{name}").register for name in names]
