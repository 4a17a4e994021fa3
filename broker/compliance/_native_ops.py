"""The value semantics of natively compiled CEL rules: CEL's, on the broker's variable types.

Closures built here take the CEL variables (a mapping) and return a value, raise `Fallback`
where CEL would error or the types leave the simple cases (the caller then runs CEL), or
raise `Unknown` when a variable is not bound yet (partial evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

from broker.errors import BrokerError


class Fallback(BrokerError):
    """The native predicate cannot decide this input: run the CEL program."""


class Unknown(BrokerError):
    """The outcome depends on a variable not bound yet (partial evaluation)."""


Fn = Callable[[Mapping[str, Any]], Any]
Side = Callable[[Mapping[str, Any]], "bool | str"]
"""A predicate that returns its bool, or `UNKNOWN`/`FALLBACK` instead of raising."""

_EXACT = 2**53


def kind(v: Any) -> str | None:
    t = v.__class__
    if t is str:
        return "s"
    if t is bool:
        return "b"
    if t is int or t is float:
        return "n"
    return None


def _eq(a: Any, b: Any) -> bool:
    ka, kb = kind(a), kind(b)
    if ka is None or kb is None:
        raise Fallback
    if ka != kb:
        return False  # CEL's heterogeneous equality: "1" == 1 is false, not an error
    if ka == "n" and a.__class__ is not b.__class__ and (abs(a) > _EXACT or abs(b) > _EXACT):
        raise Fallback  # int vs double beyond exact floats: leave rounding to CEL
    return bool(a == b)


def _order(a: Any, b: Any) -> tuple[Any, Any]:
    ka, kb = kind(a), kind(b)
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


def truth(v: Any) -> bool:
    if v is True or v is False:
        return bool(v)
    raise Fallback  # a non-bool where CEL wants one: CEL errors


def boolean(fn: Fn) -> Fn:
    def run(env: Mapping[str, Any]) -> bool:
        return truth(fn(env))

    return strict_as(run, fn)


_UNKNOWN = UNKNOWN = "unknown"
_FALLBACK = FALLBACK = "fallback"
"""What a `&&`/`||` operand gave besides a bool. Markers, not the exception objects: a kept
exception's traceback holds its frame, whose caller keeps the exception (a reference cycle
only the garbage collector frees, with every frame's locals: a cold decision made hundreds)."""


def _side(fn: Fn, env: Mapping[str, Any]) -> bool | str:
    """A `&&`/`||` operand: its bool, or `_UNKNOWN`/`_FALLBACK` for what it raised (CEL absorbs errors)."""
    try:
        v = fn(env)
    except Unknown:
        return _UNKNOWN
    except Fallback:
        return _FALLBACK
    return v if (v is True or v is False) else _FALLBACK


def logic(a: Fn, b: Fn, absorbing: bool) -> Fn:
    """`&&` (absorbing=False) or `||` (absorbing=True) with CEL's commutative error absorption."""
    ra, rb = _STRICT.get(a), _STRICT.get(b)
    sa, sb = side_of(a), side_of(b)

    def core(env: Mapping[str, Any]) -> bool | str:
        # an operand whose first step reads an unbound variable is unknown without running it
        # (raising and catching `Unknown` costs ~2 us; partial evaluation meets it often)
        x = _UNKNOWN if ra is not None and ra not in env else sa(env)
        if x is absorbing:
            return absorbing
        y = _UNKNOWN if rb is not None and rb not in env else sb(env)
        if y is absorbing:
            return absorbing
        if (x is True or x is False) and (y is True or y is False):
            return not absorbing
        return _UNKNOWN if x is _UNKNOWN or y is _UNKNOWN else _FALLBACK

    def run(env: Mapping[str, Any]) -> bool:
        r = core(env)
        if r is _UNKNOWN:
            raise Unknown
        if r is _FALLBACK:
            raise Fallback
        return r is True

    _SIDES[run] = core
    NODES[run] = ("logic", a, b, absorbing)
    return run


_SIDES: WeakKeyDictionary[Fn, Side] = WeakKeyDictionary()
"""`&&`/`||` closures' marker-returning forms: nested and top-level callers skip the raise."""


def side_of(fn: Fn) -> Side:
    """`fn` as a `&&`/`||` operand: its bool, or `_UNKNOWN`/`_FALLBACK`, raising neither."""
    core = _SIDES.get(fn)
    return core if core is not None else partial(_side, fn)


_RELATIONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _eq,
    "!=": lambda a, b: not _eq(a, b),
    "<": lambda a, b: (lambda p: p[0] < p[1])(_order(a, b)),
    "<=": lambda a, b: (lambda p: p[0] <= p[1])(_order(a, b)),
    ">": lambda a, b: (lambda p: p[0] > p[1])(_order(a, b)),
    ">=": lambda a, b: (lambda p: p[0] >= p[1])(_order(a, b)),
    "in": _contains,
}


_STRICT: WeakKeyDictionary[Fn, str] = WeakKeyDictionary()
"""Closures whose first step reads this variable: with it unbound they raise `Unknown`, nothing else."""


def strict_as(fn: Fn, first: Fn) -> Fn:
    """Mark `fn`, whose first step is calling `first`, as strict on `first`'s variable (if any)."""
    root = _STRICT.get(first)
    if root is not None:
        _STRICT[fn] = root
    return fn


NODES: WeakKeyDictionary[Fn, tuple[Any, ...]] = WeakKeyDictionary()
"""What each compiled closure computes, by kind and operands (`broker.compliance._native_gen`
writes one Python function from them; a closure not here is called as it is)."""

_CONSTANTS: WeakKeyDictionary[Fn, Any] = WeakKeyDictionary()
_VARIABLES: WeakKeyDictionary[Fn, str] = WeakKeyDictionary()
"""Which compiled closures are a literal or a bare variable: the common shapes get one closure
(`x.f == "lit"`), not a chain of them, with the same answers and the same raises."""


def relation(op: str, a: Fn, b: Fn) -> Fn:
    if op in ("==", "!=") and b in _CONSTANTS and _CONSTANTS[b].__class__ is str:
        fn = _equals_text(a, _CONSTANTS[b], op == "!=")
    else:
        rel = _RELATIONS[op]
        fn = strict_as(lambda env: rel(a(env), b(env)), a)
    NODES[fn] = ("rel", op, a, b)
    return fn


def negation(inner: Fn) -> Fn:
    """`!inner`: CEL's logical not (a non-bool operand errors)."""
    fn = strict_as(lambda env: not truth(inner(env)), inner)
    NODES[fn] = ("not", inner)
    return fn


def _equals_text(a: Fn, text: str, negate: bool) -> Fn:
    """`a == "text"` (or `!=`): `_eq` with its string case first."""

    def run(env: Mapping[str, Any]) -> bool:
        x = a(env)
        if x.__class__ is str:
            return x != text if negate else x == text
        if kind(x) is None:
            raise Fallback
        return negate  # another CEL type never equals a string

    read = _FIELDS.get(a)
    if read is not None:  # `variable.name == "text"`: its marker form in one frame (the commonest rule part)
        root, name = read

        def side(env: Mapping[str, Any]) -> bool | str:
            node = env.get(root, _UNBOUND)
            if node is _UNBOUND:
                return _UNKNOWN
            if node.__class__ is not dict or name not in node:
                return _FALLBACK
            x = node[name]
            if x.__class__ is str:
                return x != text if negate else x == text
            if kind(x) is None:
                return _FALLBACK
            return negate

        _SIDES[run] = side
    return strict_as(run, a)


def field(base: Fn, name: str) -> Fn:
    root = _VARIABLES.get(base)
    if root is not None:  # `variable.name`: one closure

        def top(env: Mapping[str, Any]) -> Any:
            node = env.get(root, _UNBOUND)
            if node is _UNBOUND:
                raise Unknown
            if node.__class__ is not dict or name not in node:
                raise Fallback
            return node[name]

        _STRICT[top] = root
        _FIELDS[top] = (root, name)
        NODES[top] = ("field", base, name)
        return top

    def run(env: Mapping[str, Any]) -> Any:
        node = base(env)
        if node.__class__ is not dict or name not in node:
            raise Fallback  # CEL: no such key (or a field of a non-map)
        return node[name]

    NODES[run] = ("field", base, name)
    return strict_as(run, base)


_UNBOUND = object()
_FIELDS: WeakKeyDictionary[Fn, tuple[str, str]] = WeakKeyDictionary()
"""`variable.name` closures: the variable and the field they read."""


def variable(name: str) -> Fn:
    def run(env: Mapping[str, Any]) -> Any:
        value = env.get(name, _UNBOUND)
        if value is _UNBOUND:
            raise Unknown
        return value

    _VARIABLES[run] = name
    _STRICT[run] = name
    NODES[run] = ("var", name)
    return run


def constant(value: Any) -> Fn:
    def run(env: Mapping[str, Any]) -> Any:
        return value

    _CONSTANTS[run] = value
    NODES[run] = ("const", value)
    return run


def size(arg: Fn) -> Fn:
    def run(env: Mapping[str, Any]) -> int:
        v = arg(env)
        # the `cel` interpreter sizes a string in UTF-8 bytes, Python in code points: only an
        # ASCII string (where they agree) is sized here, any other goes to CEL
        if v.__class__ in (list, tuple, dict) or (v.__class__ is str and v.isascii()):
            return len(v)
        raise Fallback

    NODES[run] = ("size", arg)
    return strict_as(run, arg)


def string_method(base: Fn, name: str, arg: Fn) -> Fn:
    def run(env: Mapping[str, Any]) -> bool:
        s, x = base(env), arg(env)
        if s.__class__ is not str or x.__class__ is not str:
            raise Fallback
        if name == "startsWith":
            return s.startswith(x)
        if name == "endsWith":
            return s.endswith(x)
        return x in s

    NODES[run] = ("method", base, name, arg)
    return strict_as(run, base)


def has(base: Fn, name: str) -> Fn:
    def run(env: Mapping[str, Any]) -> bool:
        node = base(env)
        if node.__class__ is not dict:
            raise Fallback
        return name in node

    NODES[run] = ("has", base, name)
    return strict_as(run, base)


def macro(base: Fn, name: str, var: str, body: Fn) -> Fn:
    """`exists` / `all` over a list (or a map's keys), element by element in order as the CEL
    library runs them: the first decisive element decides, and an element that errors before
    one does makes the whole an error (the spec's error absorption is not the library's)."""
    decisive = name == "exists"

    def run(env: Mapping[str, Any]) -> bool:
        items = base(env)
        if items.__class__ not in (list, tuple, dict):
            raise Fallback
        for item in items:
            r = _side(body, {**env, var: item})
            if r is decisive:
                return decisive
            if r is _UNKNOWN:  # (what it will be decides whether a later element is reached)
                raise Unknown
            if r is _FALLBACK:
                raise Fallback
        return not decisive

    return strict_as(run, base)
