"""Native Python predicates for the simple CEL rules, compiled once at policy load.

Most operator rules are comparisons of a field with a literal joined by `&&`, `||` and `!`.
`compile_native(src)` turns such a rule into a Python closure over the CEL variables; any
other syntax (arithmetic, ternaries, conversions, regexes, escapes in strings...) returns
None and the rule stays on the CEL program. A compiled predicate only answers on CEL's
happy path: a missing field, a type CEL would reject or compare differently, a non-bool
operand, raises `Fallback` and the caller runs the CEL program instead, so CEL's error
semantics (and its error messages) are kept by construction. `&&`/`||` absorb errors like
CEL's (`false && error` is false either way round).

Evaluated with only some variables bound (the job's and the tenant's before any site is
looked at), a predicate raises `Unknown` when the answer depends on the missing ones: a
rule that is already false cannot match any site (partial evaluation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from broker.compliance._native_gen import compile_side
from broker.compliance._native_ops import (
    FALLBACK,
    UNKNOWN,
    Fallback,
    Fn,
    Side,
    Unknown,
    boolean,
    constant,
    field,
    has,
    logic,
    macro,
    negation,
    relation,
    side_of,
    size,
    string_method,
    variable,
)
from broker.compliance._native_ops import (
    kind as value_kind,
)
from broker.errors import BrokerError

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>\d+\.\d+(?:[eE][+-]?\d+)?(?![\w.])|\d+[eE][+-]?\d+(?![\w.])|\d+(?![\w.]))
    |(?P<str>"[^"\\\n]*"|'[^'\\\n]*')
    |(?P<id>[A-Za-z_]\w*)
    |(?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.-])
    )""",
    re.X,
)
_RELOPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_STRING_METHODS = frozenset({"startsWith", "endsWith", "contains"})
_MACROS = frozenset({"exists", "all"})
_INT_MAX = 2**63 - 1

__all__ = ["FALLBACK", "UNKNOWN", "Fallback", "Native", "Unknown", "compile_native"]


class _Unsupported(BrokerError):
    """Syntax outside the compiled subset: the rule stays on CEL."""


@dataclass(frozen=True, slots=True)
class Native:
    """A compiled predicate and the top-level variables it reads."""

    fn: Fn
    roots: frozenset[str]
    side: Side
    """`fn` returning `UNKNOWN` or `FALLBACK` where `fn` raises (no exception on the hot path),
    written out as one function (`broker.compliance._native_gen`) when it can be."""


def compile_native(src: str) -> Native | None:
    """The native form of `src`, or None when it uses anything outside the simple subset."""
    try:
        tokens = _tokenize(src)
        parser = _Parser(tokens)
        fn = parser.parse()
    except (_Unsupported, ValueError, RecursionError):
        return None
    return Native(boolean(fn), frozenset(parser.roots), compile_side(fn) or side_of(fn))


def _tokenize(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i, n = 0, len(src)
    while i < n:
        m = _TOKEN.match(src, i)
        if m is None or m.end() == i:
            if src[i:].strip():
                raise _Unsupported(src[i:])
            break
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        i = m.end()
    return out


class _Parser:
    """Recursive descent over CEL's grammar, building closures; raises _Unsupported outside it."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.roots: set[str] = set()
        self.bound: list[str] = []

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise _Unsupported("end of input")
        tok = self.tokens[self.i]
        if expected is not None and tok[1] != expected:
            raise _Unsupported(tok[1])
        self.i += 1
        return tok

    def parse(self) -> Fn:
        fn = self.disjunction()
        if self.i != len(self.tokens):
            raise _Unsupported(self.tokens[self.i][1])
        return fn

    def disjunction(self) -> Fn:
        fn = self.conjunction()
        while self.peek() == "||":
            self.take()
            fn = logic(fn, self.conjunction(), True)
        return fn

    def conjunction(self) -> Fn:
        fn = self.relation()
        while self.peek() == "&&":
            self.take()
            fn = logic(fn, self.relation(), False)
        return fn

    def relation(self) -> Fn:
        fn = self.unary()
        op = self.peek()
        if op in _RELOPS and self.tokens[self.i][0] in ("op", "id"):
            self.take()
            fn = relation(op, fn, self.unary())
            if self.peek() in _RELOPS:
                raise _Unsupported("chained relation")
        return fn

    def unary(self) -> Fn:
        tok = self.peek()
        if tok == "!":
            self.take()
            return negation(self.unary())
        if tok == "-":
            self.take()
            kind, text = self.take()
            if kind != "num":
                raise _Unsupported("unary minus")
            return constant(_number("-" + text))
        return self.member()

    def member(self) -> Fn:
        fn = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == "[":
                kind, text = self.take()
                self.take("]")
                if kind != "str":
                    raise _Unsupported("index")
                fn = field(fn, text[1:-1])
                continue
            kind, attr = self.take()
            if kind != "id":
                raise _Unsupported(attr)
            fn = self.method(fn, attr) if self.peek() == "(" else field(fn, attr)
        return fn

    def method(self, base: Fn, attr: str) -> Fn:
        self.take("(")
        if attr in _MACROS:
            kind, var = self.take()
            if kind != "id":
                raise _Unsupported(var)
            self.take(",")
            self.bound.append(var)
            body = self.disjunction()
            self.bound.pop()
            self.take(")")
            return macro(base, attr, var, body)
        if attr == "size":
            self.take(")")
            return size(base)
        if attr in _STRING_METHODS:
            arg = self.disjunction()
            self.take(")")
            return string_method(base, attr, arg)
        raise _Unsupported(attr)

    def primary(self) -> Fn:
        kind, text = self.take()
        if kind == "num":
            return constant(_number(text))
        if kind == "str":
            return constant(text[1:-1])
        if text == "(":
            fn = self.disjunction()
            self.take(")")
            return fn
        if text == "[":
            return self.list_literal()
        if kind != "id" or text in ("null", "in"):
            raise _Unsupported(text)
        if text in ("true", "false"):
            return constant(text == "true")
        if self.peek() == "(":
            return self.function(text)
        if text not in self.bound:
            self.roots.add(text)
        return variable(text)

    def function(self, name: str) -> Fn:
        self.take("(")
        if name == "size":
            arg = self.disjunction()
            self.take(")")
            return size(arg)
        if name == "has":
            start = self.i
            self.member()  # validates the argument; rebuilt below without its last field
            end = self.i
            self.take(")")
            if end - start < 3 or self.tokens[end - 2][1] != "." or self.tokens[end - 1][0] != "id":
                raise _Unsupported("has() needs a field selection")
            base = _Parser(self.tokens[start : end - 2])
            base.bound = list(self.bound)
            fn = base.parse()
            self.roots |= base.roots
            return has(fn, self.tokens[end - 1][1])
        raise _Unsupported(name)

    def list_literal(self) -> Fn:
        items: list[Any] = []
        while self.peek() != "]":
            fn = self.unary()
            try:
                items.append(fn({}))  # literals only: a list of fields stays on CEL
            except (Fallback, Unknown):
                raise _Unsupported("list element") from None
            if value_kind(items[-1]) is None:
                raise _Unsupported("list element")
            if self.peek() != "]":
                self.take(",")
        self.take("]")
        return constant(tuple(items))


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    value = int(text)
    if abs(value) > _INT_MAX:
        raise _Unsupported("integer overflow")
    return value
