"""Turn pydantic validation errors into `field.path: message` lines people can act on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from broker.errors import BrokerError


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


def _message(err: ErrorDetails) -> str:
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    kind = err["type"]
    simple = {
        "missing": "required",
        "extra_forbidden": "unknown field",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "less_than": f"must be < {ctx.get('lt')}",
        "string_too_short": f"must be at least {ctx.get('min_length')} characters",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "too_short": f"must have at least {ctx.get('min_length')} item(s)",
        "too_long": f"must have at most {ctx.get('max_length')} item(s)",
        "string_pattern_mismatch": "must be 1-63 characters of [a-z0-9-], starting and ending "
        "with a letter or digit",
        "enum": f"must be one of {ctx.get('expected')}",
        "int_parsing": "must be an integer",
        "int_type": "must be an integer",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "string_type": "must be a string",
        "dict_type": "must be a mapping",
        "tuple_type": "must be a list",
        "list_type": "must be a list",
        "datetime_parsing": "must be an ISO 8601 date-time with a UTC offset",
        "datetime_type": "must be an ISO 8601 date-time with a UTC offset",
        "bool_type": "must be true or false",
    }
    if kind in simple:
        return simple[kind]
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """` (did you mean 'x'?)` for the closest choice (case-insensitive), or an empty string."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _sibling_fields(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names of the model that holds `loc`'s last part (empty when unknown)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def violations(
    exc: ValidationError, prefix: str = "", *, model: type[BaseModel] | None = None
) -> list[FieldViolation]:
    """One violation per error, field paths written the way job YAML names them.

    With `model`, an unknown field suggests the closest known one.
    """
    result = []
    for err in reported_errors(exc):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = _path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        message = _message(err)
        if err["type"] == "extra_forbidden" and model is not None and loc:
            message += did_you_mean(str(loc[-1]), _sibling_fields(model, loc))
        result.append(FieldViolation(field=path, description=message))
    return result


def reported_errors(exc: ValidationError) -> list[Any]:
    """The errors worth saying: not a list's "too short" when one of its items failed (pydantic
    counts the list without its bad items: `command: [true]` was "at least 1 item" of one)."""
    errors = exc.errors()

    def an_item_failed(loc: tuple[int | str, ...]) -> bool:
        return any(len(e["loc"]) > len(loc) and tuple(e["loc"][: len(loc)]) == tuple(loc) for e in errors)

    return [e for e in errors if not (e["type"] == "too_short" and an_item_failed(e["loc"]))]


class BadRequestError(BrokerError):
    """A request with field problems; the gRPC edge answers INVALID_ARGUMENT naming each field."""

    def __init__(self, items: Sequence[FieldViolation]) -> None:
        super().__init__("; ".join(str(v) for v in items))
        self.items = list(items)
