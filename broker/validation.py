"""Turn pydantic validation errors into `field.path: message` lines people can act on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails


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


def violations(exc: ValidationError, prefix: str = "") -> list[FieldViolation]:
    """One violation per error, field paths written the way job YAML names them."""
    result = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if p not in ("function-after[_names_not_blank(), tuple[str, ...]]",)]
        path = _path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        result.append(FieldViolation(field=path, description=_message(err)))
    return result
