"""Sites (and accelerators) that give a rule the same inputs: one evaluation serves them all.

A rule reads a few fields of the `site` (or `hardware`) variable: `"blocked" in site.labels`
reads the labels only, so every site with the same labels gets the same outcome from it
once the job and the tenant are fixed. The class of a site for a rule is the frozen tuple of
the values the rule reads there (`CompiledRule.paths`, the same paths the CEL memo keys
use), computed once per (rule, site) from the policy alone: it is part of compiling the
rules, not a verdict, so it stays when the verdicts are cleared.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol

from broker.compliance.celenv import Path
from broker.compliance.values import at, freeze

ROOTS = ("site", "hardware")

_UNREAD = object()

LIMIT = 65_536
"""Entries kept before the classes are computed again (bounded memory; results unchanged)."""


class Reading(Protocol):
    """What the classes read of a compiled rule."""

    @property
    def paths(self) -> tuple[Path, ...]: ...


class ValueClasses:
    """Per rule, per site id (or accelerator name): the values it reads there, frozen."""

    __slots__ = ("_classes", "_reads", "known")

    def __init__(self, rules: Sequence[Reading]) -> None:
        self._reads: tuple[dict[str, tuple[Path, ...]], ...] = tuple(
            {root: tuple(p[1:] for p in r.paths if p[0] == root) for root in ROOTS} for r in rules
        )
        self._classes: dict[tuple[int, str, str | None], tuple[Any, Hashable]] = {}
        self.known = self._classes
        """(rule, root, name) -> (the mapping read, its class): what `of` returns for that very
        mapping, readable without a call (the folds' inner loops)."""

    def clear(self) -> None:
        """Forget every class (benchmarks of a first decision on new rules; results unchanged)."""
        self._classes.clear()

    def of(self, index: int, root: str, name: str | None, mapping: Any) -> Hashable:
        """The class of `mapping` (the `root` variable of site or accelerator `name`) for rule
        `index`: equal classes mean the rule reads equal values there (a field the rule
        reads but the mapping lacks makes a class of its own)."""
        key = (index, root, name)
        entry = self._classes.get(key)
        if entry is not None and entry[0] is mapping:
            return entry[1]
        values: list[Any] = [root]
        for path in self._reads[index][root]:
            try:
                values.append(freeze(at(mapping, path)))
            except (KeyError, TypeError, IndexError):
                return (root, name, _UNREAD)  # no sharing: CEL words what it cannot read
        if len(self._classes) >= LIMIT:
            self._classes.clear()
        value = tuple(values)
        self._classes[key] = (mapping, value)
        return value
