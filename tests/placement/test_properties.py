"""Properties of place(): deny and residency never violated, monotone in price, stable, deterministic."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.placement import PlacementContext, place
from broker.policy import Policy

TENANTS = ["pku-nlp", "zhipu-sme", "sg-partner"]
ACCELS = ["A800", "A100", "A100-80GB", "H100", "H800", "A10", "T4", "L20", "L40S", "Ascend910B", "V100"]

jobs = st.builds(
    lambda count, any_of, residency, spot, priority, hours, cap: JobSpec.model_validate(
        {
            "name": "p",
            "command": ["run"],
            "runtime_estimate": f"{hours}h",
            "data_residency": residency,
            "spot": spot,
            "priority": priority,
            "max_price_per_hour": cap,
            "resources": {"accelerators": {"count": count if any_of or count else 0, "any_of": any_of}},
        }
    ),
    st.sampled_from([0, 1, 2, 4, 8]),
    st.lists(st.sampled_from(ACCELS), max_size=3, unique=True),
    st.sampled_from(["any", "cn-mainland"]),
    st.sampled_from(["never", "allowed", "required"]),
    st.sampled_from(["low", "normal", "high"]),
    st.integers(min_value=1, max_value=48),
    st.one_of(st.none(), st.floats(min_value=5, max_value=3000)),
)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def subset(offers: list[Offer], data: st.DataObject) -> list[Offer]:
    picks = data.draw(st.lists(st.integers(0, len(offers) - 1), min_size=1, max_size=60, unique=True))
    return [offers[i] for i in sorted(picks)]


@SETTINGS
@given(job=jobs, tenant=st.sampled_from(TENANTS), data=st.data())
def test_never_violates_deny_or_residency(
    policy: Policy, offers: list[Offer], job: JobSpec, tenant: str, data: st.DataObject
) -> None:
    chosen_from = subset(offers, data)
    ex = place(job, TenantId(tenant), chosen_from, policy, PlacementContext())
    t = policy.tenant(tenant)
    assert t is not None
    for s in ex.offers:
        if not s.allowed:
            continue
        site = policy.site(s.offer.site)
        assert site is not None
        if job.data_residency.value != "any":
            assert site.residency == job.data_residency.value
        hw = policy.hardware(s.offer.accelerator)
        operator = site.operator_country or site.country
        if operator == "US" and hw.classification.cls != "none":
            assert hw.classification.cls in t.export_licences or "D:5" not in policy.tenant_groups(t)
        if t.allowed_sites is not None:
            assert s.offer.site in t.allowed_sites
        if job.priority.value == "high":
            assert not s.offer.spot
        assert not s.reasons
    if ex.chosen is not None:
        assert ex.chosen.allowed


@SETTINGS
@given(job=jobs, tenant=st.sampled_from(TENANTS), data=st.data(), factor=st.floats(1.01, 10))
def test_raising_a_price_never_ranks_higher(
    policy: Policy, offers: list[Offer], job: JobSpec, tenant: str, data: st.DataObject, factor: float
) -> None:
    pool = subset(offers, data)
    before = place(job, TenantId(tenant), pool, policy, PlacementContext())
    allowed = [s.offer for s in before.offers if s.allowed]
    if not allowed:
        return
    target = data.draw(st.sampled_from(allowed))
    dearer = target.model_copy(update={"price_per_hour": target.price_per_hour * factor + 0.01})
    after = place(
        job, TenantId(tenant), [dearer if o is target else o for o in pool], policy, PlacementContext()
    )

    def rank_of(ex: Any, offer: Offer) -> int:
        return next(i for i, s in enumerate(ex.offers) if s.offer is offer)

    assert rank_of(after, dearer) >= rank_of(before, target)


@SETTINGS
@given(job=jobs, tenant=st.sampled_from(TENANTS), data=st.data())
def test_removing_a_non_chosen_offer_keeps_the_choice(
    policy: Policy, offers: list[Offer], job: JobSpec, tenant: str, data: st.DataObject
) -> None:
    pool = subset(offers, data)
    ex = place(job, TenantId(tenant), pool, policy, PlacementContext())
    if len(pool) < 2:
        return
    victim = data.draw(st.sampled_from(pool))
    if ex.chosen is not None and victim is ex.chosen.offer:
        return
    ex2 = place(job, TenantId(tenant), [o for o in pool if o is not victim], policy, PlacementContext())
    assert (ex.chosen is None) == (ex2.chosen is None)
    if ex.chosen is not None and ex2.chosen is not None:
        assert ex2.chosen.offer is ex.chosen.offer


@SETTINGS
@given(job=jobs, tenant=st.sampled_from(TENANTS), data=st.data())
def test_deterministic_and_order_independent_choice(
    policy: Policy, offers: list[Offer], job: JobSpec, tenant: str, data: st.DataObject
) -> None:
    pool = subset(offers, data)
    ctx = PlacementContext(
        blocked=frozenset({"aws-us-east-1/us-east-1"}),
        unhealthy_sites={SiteId("aws-cn-north-1"): "auth error"},
    )
    a = place(job, TenantId(tenant), pool, policy, ctx)
    b = place(job, TenantId(tenant), pool, policy, ctx)
    c = place(job, TenantId(tenant), list(reversed(pool)), policy, ctx)
    assert a.to_json() == b.to_json()

    def key(e: Any) -> str | None:
        return e.chosen.offer.key if e.chosen else None

    assert key(a) == key(c)
    assert [s.offer.key for s in a.offers if s.allowed] == [s.offer.key for s in c.offers if s.allowed]
