"""Sites (and accelerators) of one class for a rule give it the same answer (issue 15, "Cold
decisions, not only cached ones": evaluate each rule once per distinct tuple of the fields it
reads). The rule folds evaluate a rule once per class (`broker/compliance/classes.py`), so a
class must never join two sites the rule tells apart: checked here on the benchmark's 20
rules and random site and accelerator mappings around the real ones (whole decisions are
compared with the plain CEL path in tests/placement/test_fast_rules.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.placement import load_policy, write_policy
from broker.compliance.classes import ValueClasses

with tempfile.TemporaryDirectory() as _tmp:
    POLICY = load_policy(write_policy(Path(_tmp)))
RULES = POLICY.rules
SITE = dict(next(iter(POLICY.index.site_vars.values())))
HARDWARE = dict(POLICY.hardware("H100").variables)
BOUND = {
    "job": {
        "priority": "high",
        "data_residency": "cn-mainland",
        "runtime_hours": 1.0,
        "accelerators": {"count": 1, "any_of": [], "min_memory_gb": 40.0},
        "cpus": 1.0,
        "labels": {},
        "max_wait_hours": 2000.0,
    },
    "tenant": POLICY.tenant_variables("t-partner"),
}

sites = st.fixed_dictionaries(
    {
        "region": st.sampled_from(["il-central-1", "us-east-1", "me-central-1", "eu-west-1"]),
        "country": st.sampled_from(["US", "DE", "RU"]),
        "residency": st.sampled_from(["global", "cn-mainland"]),
        "operator_country": st.sampled_from(["US", "CN"]),
        "carbon_gco2_kwh": st.sampled_from([400.0, 950.0, 950]),
        "labels": st.sampled_from([{}, {"blocked": "yes"}, {"x": "1"}]),
        "adapter": st.sampled_from(["aws", "slurm"]),
    }
).map(lambda changes: {**SITE, **changes})
hardware = st.fixed_dictionaries(
    {
        "flags": st.sampled_from([[], ["h20-is-informed-2025"], ["prc-3a090-gp10"]]),
        "class": st.sampled_from(["3A090.a", "EAR99"]),
        "tpp": st.sampled_from([15832.0, 40000.0]),
        "vendor": st.sampled_from(["NVIDIA", "Huawei"]),
        "memory_gb": st.sampled_from([24.0, 80.0]),
        "origin_country": st.sampled_from(["US", "XX"]),
        "datacenter": st.booleans(),
    }
).map(lambda changes: {**HARDWARE, **changes})


def _answers(index: int, variables: dict[str, Any]) -> Any:
    native = RULES.natives[index]
    assert native is not None
    return native.side(variables)


def _same_answer_within_a_class(
    kind: str, other: str, pair: list[dict[str, Any]], theirs: dict[str, Any]
) -> None:
    """Two values of `kind` in one class of a rule get its answer alike, `other` unbound then bound."""
    classes = ValueClasses(RULES.rules)
    a, b = pair
    for i in range(len(RULES.rules)):
        if classes.of(i, kind, "a", a) != classes.of(i, kind, "b", b):
            continue
        for others in ({**BOUND}, {**BOUND, other: theirs}):
            assert _answers(i, {**others, kind: a}) == _answers(i, {**others, kind: b}), RULES.rules[i].source


@settings(max_examples=200, deadline=None)
@given(pair=st.lists(sites, min_size=2, max_size=2), hw=hardware)
def test_sites_of_one_class_get_the_same_answer_from_the_rule(
    pair: list[dict[str, Any]], hw: dict[str, Any]
) -> None:
    _same_answer_within_a_class("site", "hardware", pair, hw)


@settings(max_examples=200, deadline=None)
@given(pair=st.lists(hardware, min_size=2, max_size=2), site=sites)
def test_accelerators_of_one_class_get_the_same_answer_from_the_rule(
    pair: list[dict[str, Any]], site: dict[str, Any]
) -> None:
    _same_answer_within_a_class("hardware", "site", pair, site)


def test_a_class_joins_the_sites_that_agree_on_what_the_rule_reads() -> None:
    classes = ValueClasses(RULES.rules)
    blocked = next(i for i, r in enumerate(RULES.rules) if r.source == '"blocked" in site.labels')
    one, two = {**SITE, "region": "us-east-1"}, {**SITE, "region": "eu-west-1"}
    assert classes.of(blocked, "site", "one", one) == classes.of(blocked, "site", "two", two)
    assert classes.of(blocked, "site", "three", {**SITE, "labels": {"blocked": ""}}) != classes.of(
        blocked, "site", "one", one
    )
    lacking = {k: v for k, v in SITE.items() if k != "labels"}  # a field it reads is missing
    assert classes.of(blocked, "site", "four", lacking) != classes.of(blocked, "site", "five", lacking)
