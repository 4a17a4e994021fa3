"""YAML files read with positions: `Problem` (FILE:LINE:COL), `PolicyError`, ruamel nodes -> line:col.

The policy, the catalogs it references, the tokens file and job files are all read here,
so none of them depends on another to report an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, merge_attrib
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from broker.errors import BrokerError
from broker.validation import did_you_mean

Loc = Sequence[str | int]


@dataclass(frozen=True, slots=True)
class Problem:
    """One error at `file:line:col` (1-based), printed the way compilers do."""

    file: str
    line: int
    col: int
    message: str

    def __post_init__(self) -> None:
        # One problem, one line: some library messages (a CEL regex error) draw a caret over lines.
        if "\n" in self.message:
            object.__setattr__(self, "message", " ".join(self.message.split()))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: error: {self.message}"


class PolicyError(BrokerError):
    """The policy (or a catalog it references) is invalid; `.problems` lists every error."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems) or "invalid policy")
        self.problems = problems


_PAST_MICROSECONDS = re.compile(r"\d:\d\d[.,]\d{7}")
"""A time written with more than six digits of seconds' fraction."""


class _MarkedConstructor(RoundTripConstructor):
    """Round-trip construction whose value errors carry the node's position.

    ruamel raises a bare ValueError for a date that looks right but is not one (2027-02-30,
    month 13, hour 25), which would be reported at 1:1 with no hint of which value it is.
    """

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        if _PAST_MICROSECONDS.search(str(node.value)):
            # ruamel rounds past the microsecond (.1234567 became .123457) without a word; the
            # text as written goes to the model, whose field says whether it takes it.
            return str(node.value)
        try:
            return super().construct_yaml_timestamp(node, values)
        except ValueError as exc:
            raise ConstructorError(
                None, None, f"{node.value!r} is not a valid date or time: {exc}", node.start_mark
            ) from exc


_MarkedConstructor.add_constructor("tag:yaml.org,2002:timestamp", _MarkedConstructor.construct_yaml_timestamp)


def read_text(path: Path, what: str, max_bytes: int | None = None) -> str:
    """A YAML file's text; PolicyError naming the file (and the line of a byte that is not UTF-8)
    for one that cannot be read, is larger than `max_bytes`, or is not UTF-8."""
    name = str(path)
    try:
        with path.open("rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)  # (a device never ends)
    except OSError as exc:
        raise PolicyError([Problem(name, 1, 1, f"cannot read {what}: {exc.strerror}")]) from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise PolicyError([Problem(name, 1, 1, f"larger than {max_bytes // 2**20} MiB: not a {what}")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError([Problem(name, line, 1, f"{what} is not UTF-8: {exc.reason}")]) from exc


def parse_yaml(text: str, filename: str) -> Any:
    """Parse YAML text keeping positions; syntax errors become a PolicyError."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _MarkedConstructor
    yaml.preserve_quotes = True
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _at(mark, text)
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        opened = None if exc.context_mark is None else _at(exc.context_mark, text)
        if exc.context == "while scanning a simple key" and opened is not None:
            # (a key with no `:` is noticed on the next line: a simple key cannot span lines)
            line, col = opened
        elif exc.context and opened is not None and mark is not None and opened != (line, col):
            # (an unclosed bracket or quote is found lines later: say where it began)
            what = f"{exc.context} begun at {opened[0]}:{opened[1]}: {exc.problem}"
        raise PolicyError([Problem(filename, line, col, f"YAML: {what}")]) from exc
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad encodings)
        raise PolicyError([Problem(filename, 1, 1, f"YAML: {exc}")]) from exc


def _at(mark: Any, text: str) -> tuple[int, int]:
    """1-based (line, col) of a YAML error's mark; one at the end of the file is placed after its
    last character (ruamel's is the line after the final newline: past the file's last line)."""
    if mark is None:
        return 1, 1
    if mark.index >= len(body := text.rstrip()) and body:
        last = body.rsplit("\n", 1)[-1]
        return body.count("\n") + 1, len(last) + 1
    return mark.line + 1, mark.column + 1


def position(root: Any, loc: Loc, *, key: bool = False) -> tuple[int, int]:
    """1-based (line, col) of the node at `loc`; the deepest existing ancestor if missing.

    With `key=True` a mapping entry reports its key's position rather than its value's.
    """
    node = root
    pos = (root.lc.line, root.lc.col) if hasattr(root, "lc") else (0, 0)
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            child = node[part]
            held = _holder(node, part)
            # (an empty value, `seed:`, is placed where the next token starts: a line further on)
            if (key and last) or child is None or isinstance(child, CommentedMap | CommentedSeq):
                pos = held.lc.key(part)
            else:
                pos = held.lc.value(part)
            node = child
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            pos, node = node.lc.item(part), node[part]
        else:
            break
    return pos[0] + 1, pos[1] + 1


def _holder(node: CommentedMap, key: Any) -> CommentedMap:
    """The mapping whose text holds `key` of `node`: `node` itself, or the mapping a merge key
    (`<<: {...}`) brought it from (a merged key has no position in `node`)."""
    if key in node.lc.data:
        return node
    for merged in getattr(node, merge_attrib, None) or ():
        if isinstance(merged, CommentedMap) and key in merged:
            return _holder(merged, key)  # (the first merged mapping holding it wins, as in YAML)
    return node


def _describe(err: Any, model: type[BaseModel] | None = None) -> str:
    kind = err["type"]
    loc = err["loc"]
    name = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        hint = did_you_mean(name, fields_at(model, loc)) if model is not None and loc else ""
        return f"unknown field {name!r}{hint}"
    if kind == "missing":
        return f"missing required field {name!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's wrapper for a validator's ValueError
    return msg[0].lower() + msg[1:] if msg else kind


def validation_problems(
    exc: ValidationError, root: Any, filename: str, prefix: Loc = (), *, model: type[BaseModel] | None = None
) -> list[Problem]:
    """Turn a pydantic ValidationError on a YAML document into positioned problems (with the
    document's `model`, an unknown field suggests the closest known one)."""
    problems: list[Problem] = []
    errors = exc.errors()
    # Lists with an item in error: (..., list) for each (..., list, index, ...) an error is at.
    inside = {tuple(e["loc"][:i]) for e in errors for i, part in enumerate(e["loc"]) if isinstance(part, int)}
    for err in errors:
        if err["type"] == "too_short" and tuple(err["loc"]) in inside:
            continue  # pydantic counts a list after dropping its bad items: those are the errors
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        full = [*prefix, *loc]
        line, col = position(root, full, key=err["type"] == "extra_forbidden")
        where = ".".join(str(p) for p in full)
        said = _describe(err, model)
        problems.append(Problem(filename, line, col, f"{where}: {said}" if where else said))
    return problems


def value_origin(root: Any, loc: Loc) -> tuple[int, int, str]:
    """Where a scalar's text starts (1-based line, col) and its style ('', "'", '"', '|', '>')."""
    node = root
    for part in loc[:-1]:
        node = node[part]
    last = loc[-1]
    value = node[last]
    if isinstance(node, CommentedSeq):
        line, col = node.lc.item(int(last))
    else:
        line, col = _holder(node, last).lc.value(last)
    style = getattr(value, "style", None)
    if style is None:
        cls = type(value).__name__
        style = {
            "LiteralScalarString": "|",
            "FoldedScalarString": ">",
            "SingleQuotedScalarString": "'",
            "DoubleQuotedScalarString": '"',
        }.get(cls, "")
    return line + 1, col + 1, str(style or "")


def fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names of the model that holds `loc`'s last part, through lists, tuples, mappings
    and optionals (`sites.0.partitions.1.x` -> Partition's fields; empty when unknown)."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if isinstance(part, int) or fields is None or part not in fields:
            continue  # (an item's index, or a mapping's key: its value's model is already current)
        current = _model_in(fields[part].annotation)
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (`X`, `tuple[X, ...]`, `dict[str, X]`, `X | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
