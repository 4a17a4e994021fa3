"""Table-driven placement cases on the shipped policy and its static catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.placement import PlacementContext, place
from broker.policy import Policy, load_policy_text


def job(**kw: Any) -> JobSpec:
    base: dict[str, Any] = {"name": "t", "command": ["run"], "runtime_estimate": "2h"}
    base.update(kw)
    return JobSpec.model_validate(base)


def accel(count: int, *names: str, **kw: Any) -> dict[str, Any]:
    return {"accelerators": {"count": count, "any_of": list(names), **kw}}


CASES = [
    # name, tenant, job kwargs, ctx kwargs, expected site (None = nothing), expected instance
    ("a800-onprem", "pku-nlp", {"resources": accel(8, "A800")}, {}, "shangzhuang-onprem", "a800"),
    (
        "ascend-onprem-slot",
        "pku-nlp",
        {"resources": accel(2, "Ascend910B")},
        {},
        "shangzhuang-onprem",
        "ascend",
    ),
    ("cpu-job-onprem-cpu", "pku-nlp", {}, {}, "shangzhuang-onprem", "cpu"),
    ("h100-export-denied", "pku-nlp", {"resources": accel(8, "H100")}, {}, None, None),
    ("h100-partner-ok", "sg-partner", {"resources": accel(8, "H100")}, {}, "aws-us-east-1", None),
    (
        "residency-keeps-mainland",
        "sg-partner",
        {"resources": accel(1, "A10", "L20", "T4"), "data_residency": "cn-mainland"},
        {},
        None,
        None,
    ),
    (
        "a10-cheapest-cn",
        "pku-nlp",
        {"resources": accel(1, "A10"), "spot": "never"},
        {},
        "aliyun-cn-wulanchabu",
        "ecs.gn7i-c8g1.2xlarge",
    ),
    (
        "a10-spot",
        "pku-nlp",
        {"resources": accel(1, "A10"), "spot": "required"},
        {},
        "aliyun-cn-wulanchabu",
        "ecs.gn7i-c8g1.2xlarge",
    ),
    (
        "onprem-unhealthy",
        "pku-nlp",
        {"resources": accel(8, "A800")},
        {"unhealthy_sites": {SiteId("shangzhuang-onprem"): "down"}},
        None,
        None,
    ),
    (
        "onprem-blocked-falls-to-h800",
        "pku-nlp",
        {"resources": accel(8, "A800", "H800")},
        {"blocked": frozenset({"shangzhuang-onprem"})},
        "aliyun-cn-wulanchabu",
        "ecs.ebmgn8v.48xlarge",
    ),
    (
        "price-cap",
        "pku-nlp",
        {"resources": accel(8, "A800", "H800"), "max_price_per_hour": 50},
        {},
        None,
        None,
    ),
    ("unknown-tenant", "nobody", {"resources": accel(1)}, {}, None, None),
    (
        "high-priority-no-spot",
        "pku-nlp",
        {"resources": accel(1, "A10"), "priority": "high"},
        {},
        "aliyun-cn-wulanchabu",
        "ecs.gn7i-c8g1.2xlarge",
    ),
]


@pytest.mark.parametrize(
    ("tenant", "kw", "ctx", "site", "instance"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cases(
    policy: Policy,
    offers: list[Offer],
    tenant: str,
    kw: dict[str, Any],
    ctx: dict[str, Any],
    site: str | None,
    instance: str | None,
) -> None:
    ex = place(job(**kw), TenantId(tenant), offers, policy, PlacementContext(**ctx))
    if site is None:
        assert ex.chosen is None
        assert all(not s.allowed and s.reasons for s in ex.offers)
    else:
        assert ex.chosen is not None
        assert ex.chosen.offer.site == site
        if instance is not None:
            assert ex.chosen.offer.instance_type == instance
    assert ex.policy_hash == policy.hash
    assert len(ex.offers) == len(offers)


def reasons_by_rule(ex: Any) -> set[str]:
    return {r.rule for s in ex.offers for r in s.reasons}


def test_reasons_name_rules_and_read_well(policy: Policy, offers: list[Offer]) -> None:
    ex = place(
        job(resources=accel(8, "H100", "A100")), TenantId("pku-nlp"), offers, policy, PlacementContext()
    )
    rules = reasons_by_rule(ex)
    assert {"us-export-3a090", "hardware.fit"} <= rules
    msg = next(r.message for s in ex.offers for r in s.reasons if r.rule == "us-export-3a090")
    assert "aws-us-east-1" in msg and "D:5" in msg and "3A090.a" in msg


def test_residency_reason(policy: Policy, offers: list[Offer]) -> None:
    ex = place(
        job(resources=accel(1, "A10"), data_residency="cn-mainland"),
        TenantId("sg-partner"),
        offers,
        policy,
        PlacementContext(),
    )
    msg = next(r.message for s in ex.offers for r in s.reasons if r.rule == "pipl-residency")
    assert "cn-mainland" in msg and "aliyun-ap-southeast-1" in msg


def test_voucher_term_applies_to_covered_sites(policy: Policy, offers: list[Offer]) -> None:
    ex = place(job(resources=accel(8, "A800")), TenantId("zhipu-sme"), offers, policy, PlacementContext())
    assert ex.chosen is not None
    assert ex.chosen.terms["voucher"] == pytest.approx(-0.4 * ex.chosen.terms["cost"])
    spent = PlacementContext(voucher_balances={"bj-compute-2026q1": 10.0})
    ex2 = place(job(resources=accel(8, "A800")), TenantId("zhipu-sme"), offers, policy, spent)
    assert ex2.chosen is not None and ex2.chosen.terms["voucher"] == pytest.approx(-10.0)


def test_partner_a800_rule_scoped(policy: Policy, offers: list[Offer]) -> None:
    ex = place(
        job(resources=accel(8, "A800", "A100")), TenantId("sg-partner"), offers, policy, PlacementContext()
    )
    assert ex.chosen is not None and ex.chosen.offer.site != "shangzhuang-onprem"
    assert "partner-no-onprem-a800" in reasons_by_rule(ex)


def test_json_shape(policy: Policy, offers: list[Offer]) -> None:
    ex = place(job(resources=accel(8, "A800")), TenantId("pku-nlp"), offers, policy, PlacementContext())
    data = json.loads(json.dumps(ex.to_json()))
    assert set(data) >= {"chosen", "offers", "policy_hash"}
    fields = {
        "site",
        "country",
        "residency",
        "instance_type",
        "accelerator",
        "count",
        "spot",
        "price_per_hour",
        "currency",
        "allowed",
        "reasons",
        "score",
        "terms",
    }
    assert fields <= set(data["chosen"])
    assert all(fields <= set(o) for o in data["offers"])
    assert data["offers"][0] == data["chosen"]
    assert set(data["chosen"]["terms"]) == {"cost", "voucher", "wait", "carbon", "preference"}
    rejected = [o for o in data["offers"] if not o["allowed"]]
    assert rejected and all(o["reasons"] and o["score"] is None for o in rejected)


def test_ranking_order(policy: Policy, offers: list[Offer]) -> None:
    ex = place(job(resources=accel(1)), TenantId("sg-partner"), offers, policy, PlacementContext())
    allowed = [s for s in ex.offers if s.allowed]
    assert [s.score for s in allowed] == sorted(s.score for s in allowed)
    first_rejected = next(i for i, s in enumerate(ex.offers) if not s.allowed)
    assert all(not s.allowed for s in ex.offers[first_rejected:])


def test_an_explanation_refuses_changes_once_built(policy: Policy, offers: list[Offer]) -> None:
    ex = place(job(resources=accel(1)), TenantId("sg-partner"), offers, policy, PlacementContext())
    for name in ("chosen", "policy_hash", "decided_at", "_chain", "_frozen"):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(ex, name, None)
    assert ex.offers and ex.offers is ex.offers  # the ranked tuple is still built once, on first read


def test_wait_cost_uses_expected_wait(policy: Policy, offers: list[Offer]) -> None:
    slow = [
        o.model_copy(update={"expected_wait_s": 360000.0}) if o.site == "shangzhuang-onprem" else o
        for o in offers
    ]
    ex = place(job(resources=accel(8, "A800", "H800")), TenantId("pku-nlp"), slow, policy, PlacementContext())
    assert ex.chosen is not None and ex.chosen.offer.site == "aliyun-cn-wulanchabu"
    onprem = next(s for s in ex.offers if s.offer.site == "shangzhuang-onprem" and s.allowed)
    assert onprem.terms["wait"] == pytest.approx(100 * 40)


def test_default_deny_needs_allow_rule(tmp_path: Path) -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    text = (
        (configs / "policy-local.yaml")
        .read_text()
        .replace("accelerators: accelerators.yaml", f"accelerators: {configs}/accelerators.yaml")
        .replace("regimes: regimes.yaml", f"regimes: {configs}/regimes.yaml")
    )
    text = text.replace(
        "compliance:\n",
        "compliance:\n  default: deny\n  rules:\n    - {id: gpu-only, allow: 'hardware.name == \"A800\"'}\n",
    )
    pol = load_policy_text(text, str(tmp_path / "p.yaml"))
    from broker.policy.offers import static_offers

    local = static_offers(pol)
    assert place(job(resources=accel(1)), TenantId("dev"), local, pol, PlacementContext()).chosen is not None
    ex = place(job(), TenantId("dev"), local, pol, PlacementContext())
    assert ex.chosen is None and "compliance.default" in reasons_by_rule(ex)


def test_local_policy_places_gpu_and_cpu_jobs() -> None:
    from broker.policy import load_policy
    from broker.policy.offers import static_offers

    pol = load_policy(Path(__file__).resolve().parents[2] / "configs" / "policy-local.yaml")
    local = static_offers(pol)
    gpu = place(job(resources=accel(2, "A800")), TenantId("dev"), local, pol, PlacementContext())
    cpu = place(job(), TenantId("dev"), local, pol, PlacementContext())
    assert gpu.chosen is not None and gpu.chosen.offer.site == "local" and gpu.chosen.offer.count == 2
    assert cpu.chosen is not None and cpu.chosen.offer.accelerator is None


def test_a_gangs_price_cap_is_for_the_whole_gang(policy: Policy, offers: list[Offer]) -> None:
    """Held-out review: a 4-node gang capped at 300 CNY/h was allowed a 278.40 CNY/h node, 1,113.60
    CNY/h for the gang: the cap was read per node."""
    spec = job(resources={**accel(8, "A800", "H800"), "nodes": 4}, max_price_per_hour=300)
    ex = place(spec, TenantId("pku-nlp"), offers, policy, PlacementContext())
    allowed = [s.offer for s in ex.offers if s.allowed]
    assert all(o.price_per_hour * 4 <= 300 for o in allowed), [(o.site, o.price_per_hour) for o in allowed]
    capped = [s for s in ex.offers if any(r.rule == "job.max_price" for r in s.reasons)]
    said = [r.message for s in capped for r in s.reasons if r.rule == "job.max_price"]
    assert said and all("4 nodes at" in m for m in said), said
    single = place(job(resources=accel(8, "A800", "H800"), max_price_per_hour=300), TenantId("pku-nlp"),
                   offers, policy, PlacementContext())
    assert any(s.allowed and s.offer.price_per_hour > 75 for s in single.offers)  # one node: per node


def test_a_drained_site_places_nothing_and_says_who_drained_it(policy: Policy, offers: list[Offer]) -> None:
    """The drained set is an input like site health: the job goes to the next site, and every
    offer of the drained one names the operator and the reason (a transient rule: the job waits
    when nothing else fits, it never fails for it)."""
    spec = job(resources=accel(8, "A800", "H800"))
    free = place(spec, TenantId("pku-nlp"), offers, policy, PlacementContext())
    assert free.chosen is not None and free.chosen.offer.site == "shangzhuang-onprem"
    why = "drained by alice: rack 4 maintenance"
    ctx = PlacementContext(drained_sites={SiteId("shangzhuang-onprem"): why})
    ex = place(spec, TenantId("pku-nlp"), offers, policy, ctx)
    assert ex.chosen is not None and ex.chosen.offer.site == "aliyun-cn-wulanchabu"
    onprem = [s for s in ex.offers if s.offer.site == "shangzhuang-onprem"]
    assert onprem and all(not s.allowed for s in onprem)
    # (an offer the job does not fit says so first: the drain is charged to the ones it fits)
    assert {r.rule for s in onprem for r in s.reasons} == {"operator.drain", "hardware.fit"}
    fits = [s for s in onprem if all(r.rule == "operator.drain" for r in s.reasons)]
    assert fits and {r.message for s in fits for r in s.reasons} == {
        "site shangzhuang-onprem drained by alice: rack 4 maintenance"
    }
    again = place(spec, TenantId("pku-nlp"), offers, policy, PlacementContext())  # (not memoized drained)
    assert again.chosen is not None and again.chosen.offer.site == "shangzhuang-onprem"
