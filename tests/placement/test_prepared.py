"""The prepared/indexed path of place() gives exactly the explanation of the plain algorithm."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.placement import (
    GROUP_FILTERS,
    OFFER_FILTERS,
    Explanation,
    PlacementContext,
    PreparedOffers,
    ScoredOffer,
    place,
    prepare_offers,
)
from broker.placement._env import Env, group_offers
from broker.placement.rank import best, rank
from broker.placement.scored import score_all
from broker.placement.types import Reason
from broker.policy import Policy, load_policy

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _score(g: Any, offers: list[Offer], env: Env) -> list[ScoredOffer]:
    """Every offer scored eagerly (the reference for the lazily built `Scored`)."""
    _, columns = score_all([(g, offers)], env)
    return [
        ScoredOffer(
            o, True, (), c + v + w + k + p, {"cost": c, "voucher": v, "wait": w, "carbon": k, "preference": p}
        )
        for o, c, v, w, k, p in zip(offers, *columns, strict=True)
    ]


SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_shared: dict[int, PreparedOffers] = {}
TENANTS = ["pku-nlp", "zhipu-sme", "sg-partner", "pku-nlp", "zhipu-sme", "sg-partner", "nobody"]
ACCELS = ["A800", "A100", "H100", "H800", "A10", "T4", "L20", "L40S", "Ascend910B", "V100", "a800"]

jobs = st.builds(
    lambda count, any_of, mem, residency, spot, priority, hours, cap, cpus, image: JobSpec.model_validate(
        {
            "name": "p",
            "command": ["run"],
            "image": image,
            "runtime_estimate": f"{hours}h",
            "data_residency": residency,
            "spot": spot,
            "priority": priority,
            "max_price_per_hour": cap,
            "resources": {
                "cpus": cpus,
                "accelerators": {"count": count, "any_of": any_of, "min_memory_gb": mem},
            },
        }
    ),
    st.sampled_from([0, 1, 1, 2, 4, 8]),
    st.lists(st.sampled_from(ACCELS), max_size=3, unique=True),
    st.sampled_from([0, 0, 0, 40, 80]),
    st.sampled_from(["any", "cn-mainland"]),
    st.sampled_from(["never", "allowed", "required"]),
    st.sampled_from(["low", "normal", "high"]),
    st.sampled_from([1, 2, 6, 48]),
    st.one_of(st.none(), st.floats(min_value=5, max_value=3000)),
    st.sampled_from([1, 8, 96]),
    st.sampled_from([None, None, "registry.example.cn/lab/train:1"]),
)


def reference(
    spec: JobSpec, tenant: str, offers: list[Offer], policy: Policy, ctx: PlacementContext
) -> tuple[ScoredOffer | None, tuple[ScoredOffer, ...]]:
    """The original eager algorithm, then rank; an offer that every filter but the sites' state
    (health, blocklist) passes is charged to that state, any other to its first lasting misfit."""
    chosen, ranked = eager(spec, tenant, offers, policy, ctx)
    _, lasting = eager(spec, tenant, offers, policy, replace(ctx, unhealthy_sites={}, blocked=frozenset()))
    misfit = {id(s.offer): s.reasons for s in lasting if not s.allowed}
    return chosen, tuple(
        s._replace(reasons=misfit[id(s.offer)]) if id(s.offer) in misfit else s for s in ranked
    )


def eager(
    spec: JobSpec, tenant: str, offers: list[Offer], policy: Policy, ctx: PlacementContext
) -> tuple[ScoredOffer | None, tuple[ScoredOffer, ...]]:
    """The original eager algorithm: every group, every filter, every rejection, then rank."""
    env = Env(spec, tenant, policy, ctx)
    groups = group_offers(offers, policy)
    rejected: list[tuple[Offer, tuple[Reason, ...]]] = []
    for gf in GROUP_FILTERS:
        groups, group_rej = gf(groups, env)
        for g, reasons in group_rej:
            rejected.extend((o, reasons) for o in g.offers)
    allowed: list[ScoredOffer] = []
    for g in groups:
        kept = g.offers
        for of in OFFER_FILTERS:
            kept, offer_rej = of(g, kept, env)
            rejected.extend(offer_rej)
            if not kept:
                break
        if kept:
            allowed.extend(_score(g, kept, env))
    chain = policy.objective.rank
    position = {id(o): i for i, o in enumerate(offers)}
    rej = sorted(rejected, key=lambda pair: position[id(pair[0])])
    ranked = (*rank(allowed, chain), *(ScoredOffer(o, False, r, float("inf"), {}) for o, r in rej))
    return best(allowed, chain), ranked


def assert_same(ex: Explanation, ref: tuple[ScoredOffer | None, tuple[ScoredOffer, ...]]) -> None:
    chosen, ranked = ref
    assert ex.chosen == chosen
    assert (ex.chosen is None) or (chosen is not None and ex.chosen.offer is chosen.offer)
    assert ex.allowed == tuple(s for s in ranked if s.allowed)  # before `offers` is built
    assert len(ex.offers) == len(ranked)
    for got, want in zip(ex.offers, ranked, strict=True):
        assert got.offer is want.offer
        assert got[1:] == want[1:]
    if ex.chosen is not None:
        assert ex.offers[0] is ex.chosen


@st.composite
def offer_pools(draw: st.DrawFn, offers: list[Offer]) -> list[Offer]:
    """A subset of the static offers, with duplicates and perturbed copies (price, market, FX, size)."""
    picks = draw(st.lists(st.integers(0, len(offers) - 1), min_size=0, max_size=80))
    pool: list[Offer] = []
    for i in picks:
        o = offers[i]
        change = draw(st.sampled_from(["same", "same", "same", "price", "spot", "currency", "count", "cpus"]))
        if change == "price":
            o = o.model_copy(update={"price_per_hour": o.price_per_hour * draw(st.floats(0.5, 2.0))})
        elif change == "spot":
            o = o.model_copy(update={"spot": not o.spot})
        elif change == "currency":
            o = o.model_copy(update={"currency": "XYZ"})
        elif change == "count" and o.accelerator is not None:
            o = o.model_copy(update={"count": draw(st.sampled_from([1, 2, 4, 8, 16]))})
        elif change == "cpus":
            o = o.model_copy(update={"cpus": draw(st.sampled_from([0.0, 1.0, 64.0]))})
        pool.append(o)
    if pool and draw(st.booleans()):
        pool.append(pool[0])  # the same offer object twice
    return pool


@st.composite
def contexts(draw: st.DrawFn, pool: list[Offer], policy: Policy) -> PlacementContext:
    sites = [s.id for s in policy.sites]
    keys = [o.key for o in pool] + sites + [f"{s.id}/{s.region}" for s in policy.sites]
    keys += [f"{o.site}/{o.zone}" for o in pool if o.zone]
    blocked: frozenset[str] = frozenset()
    if keys and draw(st.booleans()):
        blocked = frozenset(draw(st.lists(st.sampled_from(keys), max_size=3)))
    sick: dict[str, str] = {}
    if draw(st.integers(0, 2)) == 0:
        sick = draw(st.dictionaries(st.sampled_from(sites), st.sampled_from(["down", "auth"]), max_size=2))
    balances = draw(st.one_of(st.none(), st.fixed_dictionaries({"bj-compute-2026q1": st.floats(0, 500)})))
    no_images = draw(st.dictionaries(st.sampled_from(sites), st.just("no container_runtime"), max_size=2))
    return PlacementContext(
        blocked=blocked, unhealthy_sites={SiteId(k): v for k, v in sick.items()}, voucher_balances=balances,
        no_images={SiteId(k): v for k, v in no_images.items()},
    )


@SETTINGS
@given(job=jobs, tenant=st.sampled_from(TENANTS), data=st.data())
def test_prepared_and_plain_paths_match_the_reference(
    policy: Policy, offers: list[Offer], job: JobSpec, tenant: str, data: st.DataObject
) -> None:
    pool = data.draw(offer_pools(offers))
    ctx = data.draw(contexts(pool, policy))
    ref = reference(job, tenant, pool, policy, ctx)
    assert_same(place(job, TenantId(tenant), pool, policy, ctx), ref)  # plain list, first time
    assert_same(place(job, TenantId(tenant), pool, policy, ctx), ref)  # same list: memo hit
    assert_same(place(job, TenantId(tenant), prepare_offers(pool, policy), policy, ctx), ref)
    assert_same(place(job, TenantId(tenant), tuple(pool), policy, ctx), ref)
    # one snapshot shared by every example: its memos see many jobs, tenants and contexts
    shared = _shared.setdefault(id(offers), prepare_offers(offers, policy))
    assert_same(
        place(job, TenantId(tenant), shared, policy, ctx), reference(job, tenant, offers, policy, ctx)
    )


def test_a_mutated_list_is_prepared_again(policy: Policy, offers: list[Offer]) -> None:
    spec = JobSpec.model_validate(
        {"name": "m", "command": ["x"], "runtime_estimate": "1h", "resources": {"accelerators": {"count": 1}}}
    )
    pool = list(offers)
    ctx = PlacementContext()
    first = place(spec, TenantId("pku-nlp"), pool, policy, ctx)
    assert first.chosen is not None
    i = next(i for i, o in enumerate(pool) if o is first.chosen.offer)
    pool[i] = pool[i].model_copy(update={"price_per_hour": pool[i].price_per_hour * 100})
    assert_same(
        place(spec, TenantId("pku-nlp"), pool, policy, ctx), reference(spec, "pku-nlp", pool, policy, ctx)
    )
    pool.append(pool[0].model_copy(update={"price_per_hour": 0.0}))
    assert_same(
        place(spec, TenantId("pku-nlp"), pool, policy, ctx), reference(spec, "pku-nlp", pool, policy, ctx)
    )


def test_a_snapshot_of_another_policy_is_prepared_again(policy: Policy, offers: list[Offer]) -> None:
    other = load_policy(CONFIGS / "policy.yaml")  # equal content, another object
    prepared = prepare_offers(offers, other)
    spec = JobSpec.model_validate(
        {
            "name": "o",
            "command": ["x"],
            "runtime_estimate": "1h",
            "resources": {"accelerators": {"count": 8, "any_of": ["A800"]}},
        }
    )
    ex = place(spec, TenantId("pku-nlp"), prepared, policy, PlacementContext())
    assert_same(ex, reference(spec, "pku-nlp", offers, policy, PlacementContext()))
    assert list(prepared) == offers and len(prepared) == len(offers) and prepared[0] is offers[0]


def test_later_changes_to_the_context_mapping_do_not_leak(policy: Policy, offers: list[Offer]) -> None:
    spec = JobSpec.model_validate(
        {"name": "c", "command": ["x"], "runtime_estimate": "1h", "resources": {"accelerators": {"count": 1}}}
    )
    sick: dict[Any, str] = {SiteId("aliyun-cn-wulanchabu"): "down"}
    ctx = PlacementContext(unhealthy_sites=sick)
    ref = reference(spec, "pku-nlp", offers, policy, ctx)
    ex = place(spec, TenantId("pku-nlp"), offers, policy, ctx)
    sick[SiteId("shangzhuang-onprem")] = "later"
    assert_same(ex, ref)
