"""Command groups of `szb`; each module exposes `register(subparsers)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.commands import (
    audit,
    explain,
    hardware,
    health,
    jobs,
    operator,
    policy,
    simulate,
    tls,
    view,
)

Register = Callable[[Any], None]

COMMAND_GROUPS: list[Register] = [
    jobs.register,
    operator.register,
    policy.register,
    hardware.register,
    explain.register,
    simulate.register,
    tls.register,
    audit.register,
    health.register,
    view.register,
]
