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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class Fallback(Exception):
    """The native predicate cannot decide this input: run the CEL program."""


class Unknown(Exception):
    """The outcome depends on a variable not bound yet (partial evaluation)."""


Fn = Callable[[Mapping[str, Any]], Any]

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
_EXACT = 2**53
_ERROR = object()


class _Unsupported(Exception):
    """Syntax outside the compiled subset: the rule stays on CEL."""


@dataclass(frozen=True, slots=True)
class Native:
    """A compiled predicate and the top-level variables it reads."""

    fn: Fn
    roots: frozenset[str]


def compile_native(src: str) -> Native | None:
    """The native form of `src`, or None when it uses anything outside the simple subset."""
    try:
        tokens = _tokenize(src)
        parser = _Parser(tokens)
        fn = parser.parse()
    except (_Unsupported, ValueError, RecursionError):
        return None
    return Native(_boolean(fn), frozenset(parser.roots))


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


# -- value semantics (CEL's, on the types the broker's variables hold) -------------------------
def _kind(v: Any) -> str | None:
    t = v.__class__
    if t is str:
        return "s"
    if t is bool:
        return "b"
    if t is int or t is float:
        return "n"
    return None


def _eq(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka is None or kb is None:
        raise Fallback
    if ka != kb:
        return False  # CEL's heterogeneous equality: "1" == 1 is false, not an error
    if ka == "n" and a.__class__ is not b.__class__ and (abs(a) > _EXACT or abs(b) > _EXACT):
        raise Fallback  # int vs double beyond exact floats: leave rounding to CEL
    return bool(a == b)


def _order(a: Any, b: Any) -> tuple[Any, Any]:
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka not in ("s", "n"):
        raise Fallback  # CEL raises "no such overload" (or orders bools): let it say so
    if ka == "n" and a.__class__ is not b.__class__ and (abs(a) > _EXACT or abs(b) > _EXACT):
        raise Fallback
    return a, b


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, (list, tuple)):
        return any(_eq(item, e) for e in container)
    if isinstance(container, dict) and item.__class__ is str and all(k.__class__ is str for k in container):
        return item in container
    raise Fallback


def _truth(v: Any) -> bool:
    if v is True or v is False:
        return bool(v)
    raise Fallback  # a non-bool where CEL wants one: CEL errors


def _boolean(fn: Fn) -> Fn:
    def run(env: Mapping[str, Any]) -> bool:
        return _truth(fn(env))

    return run


def _side(fn: Fn, env: Mapping[str, Any]) -> bool | Exception:
    """A `&&`/`||` operand: its bool, or the exception it raised (CEL absorbs errors there)."""
    try:
        v = fn(env)
    except (Fallback, Unknown) as exc:
        return exc
    return v if (v is True or v is False) else Fallback()


def _logic(a: Fn, b: Fn, absorbing: bool) -> Fn:
    """`&&` (absorbing=False) or `||` (absorbing=True) with CEL's commutative error absorption."""

    def run(env: Mapping[str, Any]) -> bool:
        x = _side(a, env)
        if x is absorbing:
            return absorbing
        y = _side(b, env)
        if y is absorbing:
            return absorbing
        if isinstance(x, bool) and isinstance(y, bool):
            return not absorbing
        if isinstance(x, Unknown) or isinstance(y, Unknown):
            raise Unknown
        raise Fallback

    return run


_RELATIONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _eq,
    "!=": lambda a, b: not _eq(a, b),
    "<": lambda a, b: (lambda p: p[0] < p[1])(_order(a, b)),
    "<=": lambda a, b: (lambda p: p[0] <= p[1])(_order(a, b)),
    ">": lambda a, b: (lambda p: p[0] > p[1])(_order(a, b)),
    ">=": lambda a, b: (lambda p: p[0] >= p[1])(_order(a, b)),
    "in": _contains,
}


def _relation(op: str, a: Fn, b: Fn) -> Fn:
    rel = _RELATIONS[op]
    return lambda env: rel(a(env), b(env))


def _field(base: Fn, name: str) -> Fn:
    def run(env: Mapping[str, Any]) -> Any:
        node = base(env)
        if node.__class__ is not dict or name not in node:
            raise Fallback  # CEL: no such key (or a field of a non-map)
        return node[name]

    return run


def _variable(name: str) -> Fn:
    def run(env: Mapping[str, Any]) -> Any:
        try:
            return env[name]
        except KeyError:
            raise Unknown from None

    return run


def _constant(value: Any) -> Fn:
    return lambda env: value


def _size(arg: Fn) -> Fn:
    def run(env: Mapping[str, Any]) -> int:
        v = arg(env)
        if v.__class__ in (str, list, tuple, dict):
            return len(v)
        raise Fallback

    return run


def _string_method(base: Fn, name: str, arg: Fn) -> Fn:
    def run(env: Mapping[str, Any]) -> bool:
        s, x = base(env), arg(env)
        if s.__class__ is not str or x.__class__ is not str:
            raise Fallback
        if name == "startsWith":
            return s.startswith(x)
        if name == "endsWith":
            return s.endswith(x)
        return x in s

    return run


def _has(base: Fn, name: str) -> Fn:
    def run(env: Mapping[str, Any]) -> bool:
        node = base(env)
        if node.__class__ is not dict:
            raise Fallback
        return name in node

    return run


def _macro(base: Fn, name: str, var: str, body: Fn) -> Fn:
    """`exists` / `all` over a list (or a map's keys), absorbing errors like CEL."""
    decisive = name == "exists"

    def run(env: Mapping[str, Any]) -> bool:
        items = base(env)
        if items.__class__ not in (list, tuple, dict):
            raise Fallback
        failure: Exception | None = None
        for item in items:
            r = _side(body, {**env, var: item})
            if r is decisive:
                return decisive
            if isinstance(r, Exception) and not isinstance(failure, Unknown):
                failure = r
        if failure is not None:
            raise failure
        return not decisive

    return run


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
            fn = _logic(fn, self.conjunction(), True)
        return fn

    def conjunction(self) -> Fn:
        fn = self.relation()
        while self.peek() == "&&":
            self.take()
            fn = _logic(fn, self.relation(), False)
        return fn

    def relation(self) -> Fn:
        fn = self.unary()
        op = self.peek()
        if op in _RELOPS and self.tokens[self.i][0] in ("op", "id"):
            self.take()
            fn = _relation(op, fn, self.unary())
            if self.peek() in _RELOPS:
                raise _Unsupported("chained relation")
        return fn

    def unary(self) -> Fn:
        tok = self.peek()
        if tok == "!":
            self.take()
            inner = self.unary()
            return lambda env: not _truth(inner(env))
        if tok == "-":
            self.take()
            kind, text = self.take()
            if kind != "num":
                raise _Unsupported("unary minus")
            return _constant(_number("-" + text))
        return self.member()

    def member(self) -> Fn:
        fn = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == "[":
                kind, text = self.take()
                self.take("]")
                if kind != "str":
                    raise _Unsupported("index")
                fn = _field(fn, text[1:-1])
                continue
            kind, attr = self.take()
            if kind != "id":
                raise _Unsupported(attr)
            fn = self.method(fn, attr) if self.peek() == "(" else _field(fn, attr)
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
            return _macro(base, attr, var, body)
        if attr == "size":
            self.take(")")
            return _size(base)
        if attr in _STRING_METHODS:
            arg = self.disjunction()
            self.take(")")
            return _string_method(base, attr, arg)
        raise _Unsupported(attr)

    def primary(self) -> Fn:
        kind, text = self.take()
        if kind == "num":
            return _constant(_number(text))
        if kind == "str":
            return _constant(text[1:-1])
        if text == "(":
            fn = self.disjunction()
            self.take(")")
            return fn
        if text == "[":
            return self.list_literal()
        if kind != "id" or text in ("null", "in"):
            raise _Unsupported(text)
        if text in ("true", "false"):
            return _constant(text == "true")
        if self.peek() == "(":
            return self.function(text)
        if text not in self.bound:
            self.roots.add(text)
        return _variable(text)

    def function(self, name: str) -> Fn:
        self.take("(")
        if name == "size":
            arg = self.disjunction()
            self.take(")")
            return _size(arg)
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
            return _has(fn, self.tokens[end - 1][1])
        raise _Unsupported(name)

    def list_literal(self) -> Fn:
        items: list[Any] = []
        while self.peek() != "]":
            fn = self.unary()
            try:
                items.append(fn({}))  # literals only: a list of fields stays on CEL
            except (Fallback, Unknown):
                raise _Unsupported("list element") from None
            if _kind(items[-1]) is None:
                raise _Unsupported("list element")
            if self.peek() != "]":
                self.take(",")
        self.take("]")
        return _constant(tuple(items))


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    value = int(text)
    if abs(value) > _INT_MAX:
        raise _Unsupported("integer overflow")
    return value
