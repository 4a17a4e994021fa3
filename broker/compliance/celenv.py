"""The CEL environment of policy rules: the variables, their fields, and static checks.

Neither CEL library type-checks, so rules are checked here at load time: every
`var.field.field` chain is resolved against `VARIABLES` (unknown variable or field is an
error with its column), then the rule is run against sample values (wrong types surface).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Field types: "string", "int", "double", "bool", "list", "map" (free-form) or a nested mapping.
VARIABLES: Mapping[str, Mapping[str, Any]] = {
    "job": {
        "name": "string",
        "priority": "string",
        "spot": "string",
        "data_residency": "string",
        "max_price_per_hour": "double",
        "runtime_hours": "double",
        "max_wait_hours": "double",
        "accelerators": {"count": "int", "any_of": "list", "min_memory_gb": "double"},
        "cpus": "double",
        "memory_gb": "double",
        "labels": "map",
        "image": "string",
    },
    "tenant": {
        "id": "string",
        "name": "string",
        "kind": "string",
        "entity_country": "string",
        "country_groups": "list",
        "export_licences": "list",
        "allowed_sites": "list",
        "monthly_budget": "double",
        "has_voucher": "bool",
    },
    "site": {
        "id": "string",
        "adapter": "string",
        "provider": "string",
        "region": "string",
        "country": "string",
        "residency": "string",
        "operator_country": "string",
        "carbon_gco2_kwh": "double",
        "labels": "map",
    },
    "hardware": {
        "name": "string",
        "vendor": "string",
        "family": "string",
        "class": "string",
        "tpp": "double",
        "pd": "double",
        "pd_known": "bool",
        "memory_gb": "double",
        "interconnect_gbps": "double",
        "datacenter": "bool",
        "origin_country": "string",
        "flags": "list",
        "known": "bool",
    },
    "offer": {
        "instance_type": "string",
        "accelerator": "string",
        "count": "int",
        "spot": "bool",
        "price_per_hour": "double",
        "currency": "string",
        "region": "string",
        "zone": "string",
    },
}

_SAMPLE = {"string": "", "int": 0, "double": 0.0, "bool": False, "list": [], "map": {}}
_MACROS = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_KEYWORDS = frozenset({"true", "false", "null", "in"})
_FUNCTIONS = frozenset(
    {
        "has",
        "size",
        "int",
        "uint",
        "double",
        "string",
        "bool",
        "bytes",
        "type",
        "dyn",
        "matches",
        "timestamp",
        "duration",
        "max",
        "min",
        "math",
        "sets",
    }
)

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FieldError:
    offset: int
    """0-based character offset in the expression."""
    message: str


def sample(var: str) -> dict[str, Any]:
    """Typed placeholder values for every field of a variable."""

    def build(spec: Mapping[str, Any]) -> dict[str, Any]:
        return {k: build(v) if isinstance(v, Mapping) else _SAMPLE[v] for k, v in spec.items()}

    return build(VARIABLES[var])


def _strip_strings(src: str) -> str:
    """The expression with string literal contents and `//` comments blanked (offsets kept)."""
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if src.startswith("//", i):  # a comment, to the end of its line
            j = src.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif ch in "\"'":
            prefix = _prefix(src, i)  # (r"..." and b"...": its letters are no variable)
            out[i - len(prefix) : i] = " " * len(prefix)
            raw = "r" in prefix.lower()  # (a backslash there escapes nothing: r'\' ends at its quote)
            triple = src[i : i + 3] == ch * 3
            quote = ch * 3 if triple else ch
            j = i + len(quote)
            while j < n and src[j : j + len(quote)] != quote:
                j += 2 if src[j] == "\\" and not raw else 1
            for k in range(i + len(quote), min(j, n)):
                out[k] = " "
            i = j + len(quote)
        else:
            i += 1
    return "".join(out)


def _prefix(src: str, quote_at: int) -> str:
    """The raw or bytes prefix (`r`, `b`, `rb`, `br`, any case) of the string literal opening at
    `quote_at`, or ''."""
    for size in (2, 1):
        start = quote_at - size
        word = src[start:quote_at]
        before = src[start - 1] if start > 0 else " "
        if start >= 0 and word.lower() in ("r", "b", "rb", "br") and not (before.isalnum() or before == "_"):
            return word
    return ""


def _macro_scopes(text: str) -> list[tuple[str, int, int]]:
    """(variable, start, end) of each macro's variable: bound from its call's `(` to the matching
    `)` (outside it, a variable named `site` is the site again). `text` has its strings blanked."""
    scopes = []
    for m in _MACROS.finditer(text):
        opened = text.index("(", m.start())
        depth, k = 0, opened
        while k < len(text):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            if depth == 0:
                break
            k += 1
        scopes.append((m.group(1), opened, k))
    return scopes


def _bound(scopes: list[tuple[str, int, int]], name: str, at: int) -> bool:
    """Whether `name` at offset `at` is a macro's variable (`_macro_scopes`), not a rule variable."""
    return any(var == name and start <= at < end for var, start, end in scopes)


def _dotted(text: str, chain: list[tuple[str, int]], j: int) -> int:
    """Append the `.name` parts after offset `j` to `chain` (name, offset); returns where they end."""
    n = len(text)
    while True:
        k = j
        while k < n and text[k] == " ":
            k += 1
        if k >= n or text[k] != ".":
            return j
        k += 1
        while k < n and text[k] == " ":
            k += 1
        m = _IDENT.match(text, k)
        if m is None:
            return j
        chain.append((m.group(), m.start()))
        j = m.end()


def referenced_paths(src: str) -> tuple[list[Path], list[FieldError]]:
    """Field paths the expression reads (`("job", "accelerators", "count")` …) and unknown names."""
    text = _strip_strings(src)
    scopes = _macro_scopes(text)
    paths: list[Path] = []
    errors: list[FieldError] = []
    i, n = 0, len(text)
    while i < n:
        m = _IDENT.match(text, i)
        if m is None or (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            i += 1
            continue
        prev = text[:i].rstrip()
        chain = [(m.group(), m.start())]
        i = j = _dotted(text, chain, m.end())
        after = text[j:].lstrip()
        if after.startswith("("):
            chain.pop()  # a function or method call
        if not chain or (prev.endswith(".")) or (prev and prev[-1].isdigit()):
            continue
        root, root_at = chain[0]
        if _bound(scopes, root, root_at) or root in _KEYWORDS or (root in _FUNCTIONS and len(chain) == 1):
            continue
        if root not in VARIABLES:
            if root in _FUNCTIONS:
                continue
            errors.append(FieldError(root_at, f"unknown variable {root!r} (known: {', '.join(VARIABLES)})"))
            continue
        spec: Any = VARIABLES[root]
        path: list[str] = [root]
        bad = False
        for name, at in chain[1:]:
            if not isinstance(spec, Mapping):
                break  # a map or list value: keys are free-form
            if name not in spec:
                known = ", ".join(sorted(spec))
                errors.append(FieldError(at, f"unknown field {'.'.join(path)}.{name} (known: {known})"))
                bad = True
                break
            path.append(name)
            spec = spec[name]
        if not bad:
            paths.append(tuple(path))
    return paths, errors


_PATH = r"(?<![\w.])([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)+)(?!\s*[(.\w])"
_LITERAL = r"(\"\s*\"|'\s*'|true|false|\d+\.\d+(?:[eE][+-]?\d+)?|\d+)(?![\w.(])"
_OP = r"\s*(==|!=|<=|>=|<|>)\s*"
_COMPARISONS = (
    (re.compile(_PATH + _OP + _LITERAL), 1, 3),
    (re.compile(r"(?<![\w.\])])" + _LITERAL + _OP + _PATH), 3, 1),
)


def _literal_kind(text: str) -> str:
    if text[0] in "\"'":
        return "string"
    if text in ("true", "false"):
        return "bool"
    return "double" if "." in text or "e" in text.lower() else "int"


def literal_type_errors(src: str) -> list[FieldError]:
    """A typed field compared with a literal of another type: CEL answers `==` with false, not
    an error, so such a rule would load and never match (nor would the sample run see one
    behind `&&`). Numbers compare with numbers; maps, lists and macro variables are not checked."""
    text = _strip_strings(src)
    scopes = _macro_scopes(text)
    errors: list[FieldError] = []
    for pattern, path_group, literal_group in _COMPARISONS:
        for m in pattern.finditer(text):
            names = [p.strip() for p in m.group(path_group).split(".")]
            if _bound(scopes, names[0], m.start(path_group)):
                continue  # (a macro's variable: `site` there is an element, not the site)
            spec: Any = VARIABLES.get(names[0])
            for name in names[1:]:
                spec = spec.get(name) if isinstance(spec, Mapping) else None
            if spec not in ("string", "int", "double", "bool"):
                continue
            kind = _literal_kind(m.group(literal_group))
            numbers = {"int", "double"}
            if kind == spec or (kind in numbers and spec in numbers):
                continue
            op = m.group(2)
            outcome = {"==": "never equal", "!=": "always unequal"}.get(
                op, f"CEL has no {op} between them: the rule fails when it runs"
            )
            article = "an" if kind == "int" else "a"
            errors.append(
                FieldError(
                    m.start(),
                    f"type error: {'.'.join(names)} is a {spec}, compared with {article} {kind} "
                    f"literal ({outcome})",
                )
            )
    return sorted(errors, key=lambda e: e.offset)


def lookup(values: Mapping[str, Any], path: Path) -> Any:
    """The value at `path` in a nested mapping of CEL variables, frozen to be hashable."""
    node: Any = values
    for part in path:
        node = node[part]
    if isinstance(node, dict):
        return tuple(sorted(node.items()))
    if isinstance(node, list):
        return tuple(node)
    return node
