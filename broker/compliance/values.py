"""CEL values as the rule memos see them: paths into the variables, frozen images, projections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cel

from broker.compliance.celenv import Path


def at(values: Mapping[str, Any], path: Path) -> Any:
    node: Any = values
    for part in path:
        node = node[part]
    return node


def freeze(value: Any) -> Any:
    """A hashable image of a CEL value that keeps types apart (CEL tells 1, 1.0 and true apart)."""
    if value.__class__ is str:  # a str equals no other CEL type's value
        return value
    if isinstance(value, dict):
        return (dict, tuple((freeze(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (list, tuple(freeze(v) for v in value))
    return (value.__class__, value)


def project(variables: Mapping[str, Any], paths: tuple[Path, ...]) -> dict[str, Any]:
    """The variables cut down to `paths` (nested mappings holding only what the rule reads)."""
    out: dict[str, Any] = {}
    for path in paths:
        if any(path[:i] in paths for i in range(1, len(path))):
            continue  # a prefix of it is copied whole
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = at(variables, path)
    return out


def execute(
    program: cel.Program, paths: tuple[Path, ...], variables: dict[str, Any], small: bool
) -> tuple[bool, str | None]:
    """(matched, error message) of one rule; run on its projection, or on everything if that fails.

    A result that is not a bool is an error, as one CEL raises: a deny rule fails closed on it."""
    if small:
        try:
            return _matched(program.execute(cel.Context(project(variables, paths))))
        except Exception:  # rerun on the full context: the outcome it always had
            pass
    try:
        result = program.execute(cel.Context(variables))
    except Exception as exc:
        return False, f"rule could not be evaluated ({type(exc).__name__}: {exc}); denied to be safe"
    return _matched(result)


def _matched(result: Any) -> tuple[bool, str | None]:
    # `is True` alone read "true" or 1 as no match: a deny rule returning them never denied.
    if result is True or result is False:
        return result, None
    kind = "null" if result is None else type(result).__name__
    return False, f"rule returned a non-bool ({kind} {result!r}), not true or false; denied to be safe"
