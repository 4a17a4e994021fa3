"""Lists in a policy where an entry twice means nothing (a priority, a country, a partition name).

A duplicate was accepted silently, so a typo (`[low, high, high]` meant `[low, normal, high]`)
went unnoticed. Each is refused at its FILE:LINE:COL. Lists checked elsewhere with their own
words (site, tenant and rule ids, `objective.rank`) are left to those checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel

from broker.policy._fairshare_check import Report

KEYS = {"partitions": "name", "vouchers": "id"}
"""Lists of entries named by a key field: the key is what must not repeat."""
CHECKED_ELSEWHERE = {("sites",), ("tenants",), ("compliance", "rules"), ("objective", "rank")}


def check_duplicates(document: BaseModel, at: Report) -> None:
    """Report every repeated entry of a list of plain values, or of named entries by their key."""
    _walk(document, [], at)


def _walk(value: Any, loc: list[str | int], at: Report) -> None:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk(getattr(value, name), [*loc, name], at)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, [*loc, str(key)], at)
    elif isinstance(value, tuple):
        if tuple(p for p in loc if isinstance(p, str)) not in CHECKED_ELSEWHERE:
            _repeats(value, loc, at)
        for j, item in enumerate(value):
            _walk(item, [*loc, j], at)


def _repeats(items: tuple[Any, ...], loc: list[str | int], at: Report) -> None:
    field = loc[-1] if loc else ""
    key = KEYS.get(field) if isinstance(field, str) else None
    dotted = ".".join(str(p) for p in loc)
    first: dict[Any, int] = {}
    for j, item in enumerate(items):
        if isinstance(item, BaseModel):
            if key is None or not hasattr(item, key):
                continue
            value, where, what = getattr(item, key), [*loc, j, key], f"{key} "
        else:
            value, where, what = item, [*loc, j], ""
        value = value.value if isinstance(value, Enum) else value
        if not isinstance(value, str | int | float):
            continue  # nothing plain to compare
        if value in first:
            at(
                where,
                f"{'.'.join(str(p) for p in where)}: duplicate {what}{value!r} (first at {dotted}."
                f"{first[value]}); each may appear once",
            )
        first.setdefault(value, j)
