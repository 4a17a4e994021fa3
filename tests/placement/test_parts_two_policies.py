"""Offer-rule verdicts kept with a snapshot's parts follow the policy that asks (issue 15 review):
`Part.classes` splits a group's offers by the offer fields the rules read and is kept with the
part, keyed by the rule set. Two policies whose offer rules read different fields, deciding over
ONE grouping's parts, must each keep what their own plain CEL filter keeps: a split kept for the
first policy must never decide the second's export verdict."""

from __future__ import annotations

from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext
from broker.placement._env import Env, Group, group_offers
from broker.placement.parts import Part
from broker.placement.pipeline import keep_market_and_size
from broker.placement.rules import filter_offer_rules, keep_offer_rules
from broker.policy import Policy
from tests.placement.test_parts import OFFER_RULES, OFFER_SITES, _with_offer_rules

EXPORT_CAP = _with_offer_rules(("export-cap", "offer.count >= 2", ""))
"""The benchmark's policy plus a deny on an offer field the first policy's rules never read."""


def _offers() -> list[Offer]:
    """One site's H100s on both markets at 1, 2 and 8 per node: the benchmark's rule reads only
    `offer.spot`, so its split puts 1, 2 and 8 per node of a market in one class."""
    return [
        Offer.model_construct(
            site=OFFER_SITES[0],
            instance_type=f"it-{count}-{spot}",
            accelerator="H100",
            count=count,
            price_per_hour=2.5 * count,
            currency="USD",
            cpus=0.0,
            memory_gb=0.0,
            spot=spot,
            expected_wait_s=0.0,
        )
        for spot in (False, True)
        for count in (1, 2, 8)
    ]


def _kept(groups: list[Group], policy: Policy) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The instance types each group keeps by the parts' path and by the plain CEL filter."""
    job = JobSpec.model_validate(
        {
            "name": "r",
            "command": ["x"],
            "runtime_estimate": "1h",
            "priority": "high",  # the benchmark's rule denies spot offers to high-priority jobs
            "resources": {"accelerators": {"count": 1}},
        }
    )
    policy.rules.clear()  # cold verdicts; the parts (and what is kept with them) stay
    env = Env(job, TenantId("t-sme"), policy, PlacementContext())
    kept = keep_market_and_size(env, parts=True)([(g, g.offers) for g in groups if g.offers])
    assert kept and all(type(k) is Part and k.whole for _, k in kept)  # the path under test
    step = keep_offer_rules(env)
    assert step is not None
    got = [tuple(o.instance_type for o in k) for _, k in step(kept)]
    policy.rules.fast = False
    try:
        want = [k for g, offers in kept if (k := filter_offer_rules(g, list(offers), env)[0])]
    finally:
        policy.rules.fast = True
    return got, [tuple(o.instance_type for o in k) for k in want]


def test_a_second_policy_over_the_same_parts_gets_its_own_export_verdicts() -> None:
    groups = group_offers(_offers(), OFFER_RULES)  # one grouping: its parts serve both policies
    first, plain = _kept(groups, OFFER_RULES)
    assert first == plain
    assert sorted(t for kept in first for t in kept) == ["it-1-False", "it-2-False", "it-8-False"]
    capped, plain = _kept(groups, EXPORT_CAP)
    assert capped == plain
    assert sorted(t for kept in capped for t in kept) == ["it-1-False"]  # one class: kept with the part
    again, plain = _kept(groups, OFFER_RULES)  # the first policy's split is still its own
    assert again == plain == first
