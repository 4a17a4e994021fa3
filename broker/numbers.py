"""YAML's `true`/`false` are not numbers: a model field that holds numbers refuses them.

pydantic's lax mode reads a bool as 0 or 1 wherever an int or float goes, so `count: true` in a
job file asked for one GPU and `quota: {a800: true}` granted one card, silently. Models holding
what people write (job specs, policies, broker.yaml, scenarios, the accelerator catalog) take
`NoBoolNumbers` as a base; the check runs per field before pydantic's own, so the error names
the field (and, through the YAML loaders, its line).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator

_CONTAINERS = (list, tuple, set, frozenset, dict)


def _leaves(annotation: Any) -> set[Any]:
    """The plain types an annotation admits, through Optional/Union and Annotated."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaves(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return set().union(*(_leaves(a) for a in get_args(annotation)))
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    return {annotation}


def _numeric(annotation: Any) -> bool:
    """Numbers go here and a bool does not."""
    leaves = _leaves(annotation)
    return bool(leaves & {int, float}) and bool not in leaves and Any not in leaves


@cache
def _shape(cls: type[BaseModel], name: str) -> tuple[bool, bool]:
    """(the field itself takes numbers, its items or mapping values do)."""
    info = cls.model_fields.get(name)
    if info is None:
        return False, False
    items = False
    for leaf in _leaves(info.annotation):
        if get_origin(leaf) in _CONTAINERS:
            args = [a for a in get_args(leaf) if a is not Ellipsis]
            items = items or (bool(args) and _numeric(args[-1]))
    return _numeric(info.annotation), items


class NoBoolNumbers(BaseModel):
    """A base for models people write by hand: a bool where a number goes is an error."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is None:
            return value
        itself, items = _shape(cls, info.field_name)
        if itself and isinstance(value, bool):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        if items and isinstance(value, Mapping | list | tuple | set | frozenset):
            values = value.values() if isinstance(value, Mapping) else value
            if any(isinstance(v, bool) for v in values):
                raise ValueError("must hold numbers, not true/false")
        return value
