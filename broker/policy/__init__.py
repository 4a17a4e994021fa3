"""The routing policy: schema, loading with file:line:col errors, hot reload.

The loader is imported lazily: the catalog and compliance packages use this package's
problem type and YAML helpers, and the loader uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.policy._problems import PolicyError, Problem

if TYPE_CHECKING:
    from broker.policy._load import RANKERS, load_policy, load_policy_text
    from broker.policy._policy import Hardware, Policy
    from broker.policy.watcher import PolicyWatcher

__all__ = [
    "RANKERS",
    "Hardware",
    "Policy",
    "PolicyError",
    "PolicyWatcher",
    "Problem",
    "load_policy",
    "load_policy_text",
]

_LAZY = {
    "RANKERS": "broker.policy._load",
    "load_policy": "broker.policy._load",
    "load_policy_text": "broker.policy._load",
    "Hardware": "broker.policy._policy",
    "Policy": "broker.policy._policy",
    "PolicyWatcher": "broker.policy.watcher",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'broker.policy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
