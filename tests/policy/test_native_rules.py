"""Rules compiled to Python predicates agree with the CEL program on random inputs, errors
included (issue 15, "Cold decisions": compile what can be compiled)."""

from __future__ import annotations

from typing import Any

import cel
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import broker.policy  # noqa: F401  (import order: policy before compliance)
from broker.compliance import _native_ops
from broker.compliance._native_gen import compile_side
from broker.compliance.native import FALLBACK, UNKNOWN, Fallback, Unknown, _Parser, _tokenize, compile_native
from broker.compliance.plan import Standings, live_rule

SCALARS = st.one_of(
    st.sampled_from(["", "a", "ab", "b", "cn-mainland", "US", "D:5", "unknown", "fallback", "é", "日本語"]),
    st.integers(-3, 5),
    st.sampled_from([-1.5, 0.0, 1.0, 2.5, 30000.0]),
    st.booleans(),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "k"]), SCALARS, max_size=2),
)
FIELDS = ["s", "n", "d", "b", "l", "m", "x"]
"""Field names the variables may or may not hold (any may be missing or of another type)."""


def _literal() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            ['"a"', "'ab'", '""', '"US"', "1", "0", "-2", "2.5", "1.0", "30000.0", "true", "false"]
        ),
        st.lists(st.sampled_from(['"a"', "1", "2.5", "true", '"b"']), max_size=3).map(
            lambda xs: f"[{', '.join(xs)}]"
        ),
    )


def _field() -> st.SearchStrategy[str]:
    var = st.sampled_from(["job", "site"])
    name = st.sampled_from(FIELDS)
    return st.one_of(
        st.builds(lambda v, f: f"{v}.{f}", var, name),
        st.builds(lambda v, f, k: f"{v}.{f}.{k}", var, name, st.sampled_from(["a", "k"])),
        st.builds(lambda v, f: f'{v}["{f}"]', var, name),
    )


def _operand() -> st.SearchStrategy[str]:
    return st.one_of(_field(), _literal(), _field().map(lambda f: f"size({f})"))


def _atom() -> st.SearchStrategy[str]:
    ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in"])
    return st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", _operand(), ops, _operand()),
        _field(),
        st.builds(lambda f, lit: f"{f}.startsWith({lit})", _field(), _literal()),
        st.builds(lambda f, lit: f"{f}.contains({lit})", _field(), _literal()),
        st.builds(
            lambda f, m, lit: f"{f}.{m}(e, e == {lit})",
            _field(),
            st.sampled_from(["exists", "all"]),
            _literal(),
        ),
        st.builds(lambda f: f"has({f})", _field().filter(lambda f: "[" not in f)),
        st.sampled_from(["true", "false"]),
    )


EXPRS = st.recursive(
    _atom(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} && {b}", inner, inner),
        st.builds(lambda a, b: f"{a} || {b}", inner, inner),
        inner.map(lambda a: f"!({a})"),
        inner.map(lambda a: f"({a})"),
    ),
    max_leaves=6,
)
VARIABLES = st.fixed_dictionaries(
    {
        "job": st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6),
        "site": st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6),
    }
)


def _cel(src: str, variables: dict[str, Any]) -> Any:
    try:
        return cel.compile(src).execute(cel.Context(variables))
    except Exception as exc:  # any CEL error: the rule fails closed
        return exc


@example(src="size(job.s) == 1", variables={"job": {"s": "é"}, "site": {}})  # cel sizes UTF-8 bytes
@settings(max_examples=500, deadline=None)
@given(src=EXPRS, variables=VARIABLES)
def test_native_predicate_answers_only_what_cel_answers(src: str, variables: dict[str, Any]) -> None:
    native = compile_native(src)
    assert native is not None, src  # the generator stays inside the compiled subset
    expected = _cel(src, variables)
    try:
        got = native.fn(variables)
    except Fallback:
        return  # the caller runs CEL: nothing to compare
    assert got is expected, (src, variables, expected)


@settings(max_examples=300, deadline=None)
@given(src=EXPRS, job=VARIABLES, sites=st.lists(VARIABLES, min_size=1, max_size=4))
def test_a_rule_decided_on_the_job_alone_is_decided_for_every_site(
    src: str, job: dict[str, Any], sites: list[dict[str, Any]]
) -> None:
    native = compile_native(src)
    assert native is not None
    try:
        partial = native.fn({"job": job["job"]})
    except (Fallback, Unknown):
        return
    for s in sites:
        assert _cel(src, {"job": job["job"], "site": s["site"]}) is partial, (src, job, s)


@settings(max_examples=300, deadline=None)
@given(src=EXPRS, site=VARIABLES, jobs=st.lists(VARIABLES, min_size=1, max_size=4))
def test_a_rule_decided_on_the_site_alone_is_decided_for_every_job(
    src: str, site: dict[str, Any], jobs: list[dict[str, Any]]
) -> None:
    """The other way round (a rule reading site and hardware decided per site, hardware unbound)."""
    native = compile_native(src)
    assert native is not None
    try:
        partial = native.fn({"site": site["site"]})
    except (Fallback, Unknown):
        return
    for j in jobs:
        assert _cel(src, {"job": j["job"], "site": site["site"]}) is partial, (src, site, j)


@settings(max_examples=300, deadline=None)
@given(src=EXPRS, variables=VARIABLES, drop=st.sampled_from(["job", "site"]))
def test_a_part_marked_strict_on_a_variable_only_says_unknown_without_it(
    src: str, variables: dict[str, Any], drop: str
) -> None:
    """`&&`/`||` skip an operand marked strict on an unbound variable (it would only raise
    `Unknown`): every marked closure must raise `Unknown` when its variable is unbound."""
    before = set(_native_ops._STRICT.keys())
    native = compile_native(src)
    assert native is not None
    marked = [(fn, root) for fn, root in list(_native_ops._STRICT.items()) if fn not in before]
    partial = {k: v for k, v in variables.items() if k != drop}
    for fn, root in marked:
        if root in partial:
            continue
        with pytest.raises(Unknown):
            fn(partial)


@settings(max_examples=400, deadline=None)
@given(src=EXPRS, variables=VARIABLES, drop=st.sampled_from(["job", "site", ""]))
def test_the_marker_form_answers_what_the_predicate_answers_or_raises(
    src: str, variables: dict[str, Any], drop: str
) -> None:
    """`Native.side` (what the rule plans call) returns UNKNOWN / FALLBACK where `fn` raises."""
    native = compile_native(src)
    assert native is not None
    bound = {k: v for k, v in variables.items() if k != drop}
    try:
        expected: Any = native.fn(bound)
    except Unknown:
        expected = UNKNOWN
    except Fallback:
        expected = FALLBACK
    assert native.side(bound) is expected, (src, bound)


@pytest.mark.parametrize("src", ['job.x == "a"', 'job.x != "a"', 'job.x == "a" && site.y != "b"'])
@pytest.mark.parametrize(
    "value", ["a", "b", "", 1, 0, 2.5, True, False, ["a"], {"a": 1}, None, "missing", "unbound"]
)
def test_a_field_compared_with_text_answers_in_its_one_frame_form_what_the_predicate_answers(
    src: str, value: Any
) -> None:
    """`variable.name == "text"` has its own marker form (the commonest rule part): every CEL
    kind of value, a missing field and an unbound variable, as `fn` answers or raises."""
    job: dict[str, Any] = {} if value == "missing" else {"x": value}
    bound: dict[str, Any] = {"site": {"y": "b"}} if value == "unbound" else {"job": job, "site": {"y": "c"}}
    native = compile_native(src)
    assert native is not None
    try:
        expected: Any = native.fn(bound)
    except Unknown:
        expected = UNKNOWN
    except Fallback:
        expected = FALLBACK
    assert native.side(bound) is expected


@pytest.mark.parametrize(
    "src",
    [
        "job.a + 1 > 2",  # arithmetic
        "job.a > 0u",  # unsigned literal
        'job.s == "a\\"b"',  # an escape in a string
        "job.s.matches('a.*')",  # RE2, not Python's re
        "job.a ? true : false",
        "int(job.d) == 1",
        "job.l.exists_one(e, e == 1)",
        "job.s == null",
        'r"a" == job.s',
        "job.a == 1 == true",
    ],
)
def test_syntax_outside_the_subset_stays_on_cel(src: str) -> None:
    assert compile_native(src) is None


def test_the_benchmark_rules_all_compile() -> None:
    from bench.placement import RULES

    assert [r for r in RULES if compile_native(r) is None] == []


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(
        st.tuples(
            st.one_of(EXPRS, st.just("job.s.matches('a')")),  # (a regex: no native form, CEL per group)
            st.sampled_from([None, frozenset({"t1"}), frozenset({"t2"})]),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    variables=VARIABLES,
    tenant=st.sampled_from(["t1", "t2"]),
)
def test_a_plan_stands_each_rule_as_live_rule_does(
    rules: list[tuple[str, frozenset[str] | None, bool]], variables: dict[str, Any], tenant: str
) -> None:
    """The interned standings a plan is built from are `live_rule`'s, rule by rule (the site
    unbound, as when a plan is built), and the signature naming a plan tells them apart."""
    natives = tuple(compile_native(src) for src, _, _ in rules)
    scopes = tuple(scope for _, scope, _ in rules)
    reads_offer = tuple(offer for _, _, offer in rules)
    bound = {"job": variables["job"]}
    group, offer, signature = Standings(natives, scopes, reads_offer).stand(tenant, bound)
    want = [
        live
        for i, native in enumerate(natives)
        if (scopes[i] is None or tenant in scopes[i]) and (live := live_rule(i, native, bound)) is not None
    ]
    assert group == tuple(live for live in want if not reads_offer[live.index])
    assert offer == tuple(live for live in want if reads_offer[live.index])
    standing = [2 if live.fixed is not None else 0 if live.native is not None else 1 for live in want]
    assert signature == tuple(3 * live.index + s for live, s in zip(want, standing, strict=True))


@example(src="job.s && true", variables={"job": {"s": "unknown"}, "site": {}}, drop="")  # a value
@example(src="job.l.a == 1", variables={"job": {"l": ["a"]}, "site": {}}, drop="")  # a field of a list
@example(src="size(job.s) == 1", variables={"job": {"s": "é"}, "site": {}}, drop="")  # non-ASCII: CEL
@example(src="job.b < true", variables={"job": {"b": False}, "site": {}}, drop="")  # bools: CEL decides
@settings(max_examples=1500, deadline=None)
@given(src=EXPRS, variables=VARIABLES, drop=st.sampled_from(["job", "site", ""]))
def test_a_rule_written_out_as_one_function_answers_what_its_closures_answer(
    src: str, variables: dict[str, Any], drop: str
) -> None:
    """The generated function (`_native_gen`) gives the closures' `side` value on every input:
    the same bool, or the same marker where they raise (a variable unbound, a case CEL must
    decide: wrong types, missing fields, errors `&&`/`||` absorb or not); where it answers a
    bool on bound variables, CEL answers the same."""
    fn = _Parser(_tokenize(src)).parse()
    written = compile_side(fn)
    assert written is not None, src  # the generator's rules are all written out
    bound = {k: v for k, v in variables.items() if k != drop}
    expected = _native_ops.side_of(fn)(bound)
    got = written(bound)
    assert got is expected, (src, bound, got, expected)
    if not drop and (got is True or got is False):
        assert _cel(src, bound) is got, (src, bound)


def test_a_rule_too_large_to_write_out_keeps_its_closures() -> None:
    """A tree the generator will not write (too many nodes to nest) answers through its closures."""
    src = "job.a"
    for _ in range(30):
        src = f"job.a == 1 && ({src})"
    fn = _Parser(_tokenize(src)).parse()
    assert compile_side(fn) is None
    native = compile_native(src)
    assert native is not None
    for bound in ({"job": {"a": 1}}, {"job": {"a": True}}, {"job": {}}, {}):
        assert native.side(bound) is _native_ops.side_of(fn)(bound)
