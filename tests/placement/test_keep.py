"""The cold decision path (issue 15, "Cold decisions, not only cached ones") keeps exactly what
the filters keep and scores exactly as the scorers do.

`place()` decides through keep-only twins of the filters (no reasons built; group rules
folded per site and per hardware, offer rules once per distinct offer projection) and a
columnar scorer. Each twin is checked against its filter run on the plain CEL path, and the
columns against the per-group scorers, on random policies, offers, jobs and contexts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer, TenantId
from broker.placement import GROUP_FILTERS, OFFER_FILTERS, PlacementContext, forget_snapshots, place
from broker.placement._env import Env, Group, group_offers
from broker.placement.hardware import filter_hardware_size
from broker.placement.pipeline import (
    KEEP_ORDER,
    keep_groups,
    keep_market_and_size,
    keep_offers,
    passing,
    passing_plain,
)
from broker.placement.scored import PerHour, score_all, score_columns
from broker.placement.spot import filter_spot
from broker.policy import Policy, load_policy
from tests.placement.test_fast_rules import RULES, _catalog, _seen
from tests.placement.test_fast_rules import jobs as fuzz_jobs
from tests.placement.test_prepared import TENANTS, contexts, jobs, offer_pools
from tests.placement.test_vector import exact

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_POLICIES: dict[tuple[tuple[int, ...], str], Policy] = {}


def _policy(tmp: Path, picks: tuple[int, ...], default: str) -> Policy:
    """configs/policy.yaml (export rule, residency, vouchers, carbon) plus some fuzz rules."""
    text = (CONFIGS / "policy.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(accelerators|regimes): (\w+\.yaml)", rf"\1: {CONFIGS}/\2", text)
    text = text.replace("file: catalog/", f"file: {CONFIGS}/catalog/")
    text = text.replace("  default: allow", f"  default: {default}")
    for i in picks:
        effect, expr, tenants, sites = RULES[i]
        if effect == "allow" and default == "allow":
            continue
        text += f"    - id: fuzz-{i}\n      {effect}: '{expr}'\n      reason: 'fuzz {i} at {{site}}'\n"
        text += f"      tenants: {tenants}\n" if tenants else ""
        text += f"      sites: {sites}\n" if sites else ""
    path = tmp / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path)


def _ids(items: list[Any]) -> list[int]:
    return [id(x) for x in items]


policies = st.tuples(
    st.lists(st.booleans(), min_size=len(RULES), max_size=len(RULES)).map(
        lambda on: tuple(i for i, x in enumerate(on) if x)
    ),
    st.sampled_from(["allow", "deny"]),
)


def _get_policy(tmp_path_factory: Any, key: tuple[tuple[int, ...], str]) -> Policy:
    return _POLICIES.get(key) or _POLICIES.setdefault(key, _policy(tmp_path_factory.mktemp("p"), *key))


def _plain_kept_groups(gf: Any, groups: list[Group], env: Env) -> list[Group]:
    env.policy.rules.fast = False
    try:
        return list(gf(groups, env)[0])
    finally:
        env.policy.rules.fast = True


def _plain_kept_offers(of: Any, g: Group, offers: list[Offer], env: Env) -> list[Offer]:
    env.policy.rules.fast = False
    try:
        return list(of(g, offers, env)[0])
    finally:
        env.policy.rules.fast = True


wide_jobs = st.one_of(
    jobs,
    st.builds(
        lambda count, hours, priority, spot, labels: JobSpec.model_validate(
            {
                "name": "w",
                "command": ["run"],
                "runtime_estimate": f"{hours}h",
                "priority": priority,
                "spot": spot,
                "labels": labels,
                "resources": {"cpus": 1, "accelerators": {"count": count}},
            }
        ),
        st.sampled_from([0, 1, 1, 1, 2]),
        st.sampled_from([1, 6, 30]),
        st.sampled_from(["low", "normal", "high"]),
        st.sampled_from(["allowed", "never", "required"]),
        st.sampled_from([{}, {"team": "red"}, {"no-cloud": "1"}]),
    ),
)
"""The shared job strategy, and jobs most groups fit (so the rule filters see many groups)."""


@SETTINGS
@given(key=policies, job=wide_jobs, tenant=st.sampled_from(TENANTS), data=st.data())
def test_each_keep_twin_keeps_what_its_filter_keeps_on_the_plain_cel_path(
    tmp_path_factory: Any, offers: list[Offer], key: Any, job: JobSpec, tenant: str, data: st.DataObject
) -> None:
    policy = _get_policy(tmp_path_factory, key)
    pool = data.draw(offer_pools(offers))
    ctx = data.draw(contexts(pool, policy))
    policy.rules.clear()  # the twins run first, on cold memos
    env = Env(job, tenant, policy, ctx)
    groups = [g for g in group_offers(pool, policy) if g.site is not None]  # as every filter after health
    for gf in GROUP_FILTERS:  # each on the same groups: a twin must agree on any input
        twin = keep_groups(gf, env)
        got = list(groups) if twin is None else twin(list(groups))
        want = _plain_kept_groups(gf, list(groups), env)
        assert _ids(got) == _ids(want), (gf.__name__, job, tenant, ctx)
    allowed = _plain_kept_groups(GROUP_FILTERS[-1], list(groups), env)  # offer rules see these only
    for g in allowed:
        for of in OFFER_FILTERS:
            step = keep_offers(of, env)
            got_pairs = [(g, g.offers)] if step is None else step([(g, g.offers)])
            got_offers = got_pairs[0][1] if got_pairs else []
            want_offers = _plain_kept_offers(of, g, g.offers, env)
            assert _ids(got_offers) == _ids(want_offers), (of.__name__, g.site_id, g.accelerator, job, tenant)
        fused = keep_market_and_size(env)  # spot and size in one pass: what the two filters keep
        if fused is not None:
            by_market = _plain_kept_offers(filter_spot, g, g.offers, env)
            want_offers = _plain_kept_offers(filter_hardware_size, g, by_market, env) if by_market else []
            got_pairs = fused([(g, g.offers)])
            assert _ids(got_pairs[0][1] if got_pairs else []) == _ids(want_offers), (job, tenant)


@SETTINGS
@given(
    key=policies,
    job=wide_jobs,
    tenant=st.sampled_from(TENANTS),
    nodes=st.sampled_from([1, 1, 2]),
    data=st.data(),
)
def test_the_fast_path_passes_and_scores_like_the_filters_and_scorers(
    tmp_path_factory: Any,
    offers: list[Offer],
    key: Any,
    job: JobSpec,
    tenant: str,
    nodes: int,
    data: st.DataObject,
) -> None:
    policy = _get_policy(tmp_path_factory, key)
    pool = data.draw(offer_pools(offers))
    ctx: PlacementContext = data.draw(contexts(pool, policy))
    job = job.model_copy(update={"resources": job.resources.model_copy(update={"nodes": nodes})})
    policy.rules.clear()
    env = Env(job, tenant, policy, ctx)
    groups = tuple(group_offers(pool, policy))
    fast = passing(groups, env)
    policy.rules.fast = False
    try:
        plain = passing_plain(groups, Env(job, tenant, policy, ctx))
    finally:
        policy.rules.fast = True
    want_pairs = [(id(g), _ids(o)) for g, o in plain]
    assert [(id(g), _ids(o)) for g, o in fast] == want_pairs
    want_offers, want = score_all(plain, env)
    got_offers, got = score_columns(PerHour(fast, policy), env)
    assert _ids(got_offers) == _ids(want_offers)
    assert exact(got) == exact(want)  # exact floats: the same operations in the same order


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=policies, data=st.data())
def test_memos_kept_across_many_jobs_decide_like_the_plain_cel_path(
    tmp_path_factory: Any, offers: list[Offer], key: Any, data: st.DataObject
) -> None:
    """Warm: one set of memos (rule plans shared by jobs that differ only in fields the plan
    decided on, per-site and per-hardware verdicts) serves a queue of different jobs."""
    policy = _get_policy(tmp_path_factory, key)
    catalog = _catalog(offers, data.draw(st.integers(0, 2**32)))
    policy.rules.clear()
    forget_snapshots()
    for _ in range(6):
        job = data.draw(st.one_of(fuzz_jobs, wide_jobs))
        tenant = data.draw(st.sampled_from(TENANTS))
        policy.rules.fast = False
        try:
            plain = _seen(
                place(job, TenantId(tenant), list(catalog), policy, PlacementContext())
            )  # own snapshot
        finally:
            policy.rules.fast = True
        assert _seen(place(job, TenantId(tenant), catalog, policy, PlacementContext())) == plain, (
            job,
            tenant,
        )


def test_the_decision_runs_every_offer_filter_once() -> None:
    assert sorted(map(id, KEEP_ORDER)) == sorted(map(id, OFFER_FILTERS))


@SETTINGS
@given(data=st.data())
def test_grouping_keeps_first_seen_groups_and_input_order(
    policy: Policy, offers: list[Offer], data: st.DataObject
) -> None:
    pool = data.draw(offer_pools(offers))
    pool = pool + data.draw(st.permutations(pool))  # runs and interleavings of the same groups
    naive: dict[tuple[str, str | None], list[Offer]] = {}
    for o in pool:
        naive.setdefault((o.site, o.accelerator), []).append(o)
    got = group_offers(pool, policy)
    assert [(g.site_id, g.accelerator) for g in got] == list(naive)
    assert [_ids(g.offers) for g in got] == [_ids(m) for m in naive.values()]
