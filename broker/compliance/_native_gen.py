"""A natively compiled rule written out as one Python function (built with `compile()`).

`broker.compliance.native` builds a rule as a tree of closures: one Python frame per node, a
raise for a missing variable or a case CEL must decide. This module writes the same tree
(`_native_ops.NODES`) as the source of one function whose locals hold the nodes' values: the
same steps in the same order, each `&&`/`||` operand in a `while True:` block standing for the
closures' raise (a failing step records its marker and breaks out), the same markers out.
Literals and field names are never written into the source: they are the function's globals
(`c0`, `c1`...), as is any closure of a kind not written out here, which is called as it is.
The function answers what `side_of(fn)` answers (tests/policy/test_native_rules.py pins it
over random rules and variables, unbound ones included); anything it cannot write keeps the
closures.
"""

from __future__ import annotations

from typing import Any

from broker.compliance._native_ops import (
    FALLBACK,
    NODES,
    UNKNOWN,
    Fallback,
    Fn,
    Side,
    Unknown,
    _contains,
    _eq,
    _order,
    kind,
)
from broker.errors import BrokerError

MAX_NODES = 48
"""Larger trees keep their closures (Python nests at most 20 blocks in one function)."""

_FAILED = object()
"""What the helpers return where the closures raise `Fallback` (never a CEL value)."""

_METHODS = {
    "startsWith": "{s}.startswith({x})",
    "endsWith": "{s}.endswith({x})",
    "contains": "{x} in {s}",
}
_ORDERS = frozenset({"<", "<=", ">", ">="})


def _equal(a: Any, b: Any) -> Any:
    try:
        return _eq(a, b)
    except Fallback:
        return _FAILED


def _ordered(a: Any, b: Any) -> bool:
    try:
        _order(a, b)
    except Fallback:
        return False
    return True


def _member(item: Any, container: Any) -> Any:
    try:
        return _contains(item, container)
    except Fallback:
        return _FAILED


def compile_side(fn: Fn) -> Side | None:
    """`side_of(fn)` as one function, or None when the tree is too large to write out."""
    w = _Writer()
    try:
        w.emit(1, "m = None")
        w.emit(1, "while True:")
        t = w.value(fn, 2, "m")
        w.emit(
            2, f"return {t}" if t in w.bools else f"return {t} if ({t} is True or {t} is False) else FALLBACK"
        )
        w.emit(1, "return m")
        if w.count > MAX_NODES:
            return None
        source = "def side(env):\n" + "\n".join(w.lines) + "\n"
        namespace = dict(w.names)
        namespace.update(
            UNBOUND=_UNBOUND,
            UNKNOWN=UNKNOWN,
            FALLBACK=FALLBACK,
            Unknown=Unknown,
            Fallback=Fallback,
            FAILED=_FAILED,
            KIND=kind,
            EQUAL=_equal,
            ORDERED=_ordered,
            MEMBER=_member,
            SIZED=(str, list, tuple, dict),
            ORDERABLE=(str, int, float),
        )
        exec(compile(source, "<rule>", "exec"), namespace)  # generated source: no user text in it
    except Exception:  # anything it cannot write (too deep, too large, a node it misreads) keeps the closures
        return None
    side: Side = namespace["side"]
    return side


_UNBOUND = object()


class _TooLarge(BrokerError):
    """The tree has more nodes than `MAX_NODES`."""


class _Writer:
    """The lines of the function, the globals they name, a counter for the locals."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.count = 0
        self.bools: set[str] = set()
        """The locals that hold a bool wherever they are set (no check needed)."""

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def bind(self, value: Any) -> str:
        name = f"c{len(self.names)}"
        self.names[name] = value
        return name

    def fail(self, depth: int, var: str, marker: str) -> None:
        """A step the closures would raise at: record the marker, leave the operand's block."""
        self.emit(depth, f"{var} = {marker}")
        self.emit(depth, "break")

    def operand(self, fn: Fn, depth: int) -> str:
        """A `&&`/`||` operand's bool or marker (what `_side` / a logic node's core gives)."""
        self.count += 1
        x = f"v{self.count}"
        self.emit(depth, "while True:")
        v = self.value(fn, depth + 1, x)
        self.emit(
            depth + 1,
            f"{x} = {v}" if v in self.bools else f"{x} = {v} if ({v} is True or {v} is False) else FALLBACK",
        )
        self.emit(depth + 1, "break")
        return x

    def value(self, fn: Fn, depth: int, fail: str) -> str:
        """Lines computing `fn`'s value into a new local (its name returned); where the closure
        raises, `fail` gets the marker and the enclosing block is left."""
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        t = f"v{self.count}"
        node: tuple[Any, ...] = NODES.get(fn) or ("call",)
        what = node[0]
        if what in ("rel", "logic", "not", "has") or (what == "method" and node[2] in _METHODS):
            self.bools.add(t)  # each sets a bool (or fails)
        if what == "var":
            self.emit(depth, f"{t} = env.get({self.bind(node[1])}, UNBOUND)")
            self.emit(depth, f"if {t} is UNBOUND:")
            self.fail(depth + 1, fail, "UNKNOWN")
        elif what == "const":
            self.emit(depth, f"{t} = {self.bind(node[1])}")
        elif what == "field":
            base, key = self.value(node[1], depth, fail), self.bind(node[2])
            self.emit(depth, f"if {base}.__class__ is not dict or {key} not in {base}:")
            self.fail(depth + 1, fail, "FALLBACK")
            self.emit(depth, f"{t} = {base}[{key}]")
        elif what == "rel":
            self.relation(node[1], node[2], node[3], t, depth, fail)
        elif what == "logic":
            self.logic(node[1], node[2], node[3], t, depth, fail)
        elif what == "not":
            inner = self.value(node[1], depth, fail)
            self.emit(depth, f"if {inner} is True:")
            self.emit(depth + 1, f"{t} = False")
            self.emit(depth, f"elif {inner} is False:")
            self.emit(depth + 1, f"{t} = True")
            self.emit(depth, "else:")
            self.fail(depth + 1, fail, "FALLBACK")
        elif what == "size":
            arg = self.value(node[1], depth, fail)
            # (a non-ASCII string goes to CEL, as the closure sends it: see `_native_ops.size`)
            self.emit(
                depth, f"if {arg}.__class__ not in SIZED or ({arg}.__class__ is str and not {arg}.isascii()):"
            )
            self.fail(depth + 1, fail, "FALLBACK")
            self.emit(depth, f"{t} = len({arg})")
        elif what == "method" and node[2] in _METHODS:
            s, x = self.value(node[1], depth, fail), self.value(node[3], depth, fail)
            self.emit(depth, f"if {s}.__class__ is not str or {x}.__class__ is not str:")
            self.fail(depth + 1, fail, "FALLBACK")
            self.emit(depth, f"{t} = " + _METHODS[node[2]].format(s=s, x=x))
        elif what == "has":
            base, key = self.value(node[1], depth, fail), self.bind(node[2])
            self.emit(depth, f"if {base}.__class__ is not dict:")
            self.fail(depth + 1, fail, "FALLBACK")
            self.emit(depth, f"{t} = {key} in {base}")
        else:  # any other closure (`exists`, `all`), called as it is
            self.emit(depth, "try:")
            self.emit(depth + 1, f"{t} = {self.bind(fn)}(env)")
            self.emit(depth, "except Unknown:")
            self.fail(depth + 1, fail, "UNKNOWN")
            self.emit(depth, "except Fallback:")
            self.fail(depth + 1, fail, "FALLBACK")
        return t

    def relation(self, op: str, a: Fn, b: Fn, t: str, depth: int, fail: str) -> None:
        x, y = self.value(a, depth, fail), self.value(b, depth, fail)  # a first, as `rel(a(env), b(env))`
        text = NODES.get(b)
        if op in ("==", "!=") and text is not None and text[0] == "const" and text[1].__class__ is str:
            # `_equals_text`: a string compares, another CEL type never equals, anything else falls back
            self.emit(depth, f"if {x}.__class__ is str:")
            self.emit(depth + 1, f"{t} = {x} {op} {y}")
            self.emit(depth, f"elif KIND({x}) is None:")
            self.fail(depth + 1, fail, "FALLBACK")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"{t} = {op == '!='}")
        elif op in ("==", "!=", "in"):
            helper = "MEMBER" if op == "in" else "EQUAL"
            self.emit(depth, f"{t} = {helper}({x}, {y})")
            self.emit(depth, f"if {t} is FAILED:")
            self.fail(depth + 1, fail, "FALLBACK")
            if op == "!=":
                self.emit(depth, f"{t} = not {t}")
        elif op in _ORDERS:
            # one class of str, int or float orders as `_order` lets it; any other pair asks it
            same = f"{x}.__class__ is {y}.__class__ and {x}.__class__ in ORDERABLE"
            self.emit(depth, f"if not ({same}) and not ORDERED({x}, {y}):")
            self.fail(depth + 1, fail, "FALLBACK")
            self.emit(depth, f"{t} = {x} {op} {y}")
        else:
            raise SyntaxError(op)  # not a relation the parser makes: keep the closures

    def logic(self, a: Fn, b: Fn, absorbing: bool, t: str, depth: int, fail: str) -> None:
        """`logic`'s core: an operand at the absorbing value decides, two bools give the other,
        else unknown if either is, else fall back (CEL absorbs errors either way round)."""
        x = self.operand(a, depth)
        self.emit(depth, f"if {x} is {absorbing}:")
        self.emit(depth + 1, f"{t} = {absorbing}")
        self.emit(depth, "else:")
        y = self.operand(b, depth + 1)
        self.emit(depth + 1, f"if {y} is {absorbing}:")
        self.emit(depth + 2, f"{t} = {absorbing}")
        self.emit(depth + 1, f"elif ({x} is True or {x} is False) and ({y} is True or {y} is False):")
        self.emit(depth + 2, f"{t} = {not absorbing}")
        self.emit(depth + 1, "else:")
        self.emit(depth + 2, f"{fail} = UNKNOWN if {x} is UNKNOWN or {y} is UNKNOWN else FALLBACK")
        self.emit(depth + 2, "break")
