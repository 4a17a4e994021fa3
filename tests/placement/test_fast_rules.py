"""The fast rule path (partial evaluation on the job, native predicates, per-field memos)
makes exactly the decisions of the plain CEL path, explanations included (issue 15, "Cold
decisions, not only cached ones")."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer, TenantId
from broker.placement import Explanation, PlacementContext, forget_snapshots, place
from broker.policy import Policy, load_policy

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

RULES = [
    ("deny", 'job.data_residency == "cn-mainland" && site.residency != "cn-mainland"', None, None),
    ("deny", 'hardware.class == "3A090.a" && site.country == "US" && tenant.kind == "sme"', None, None),
    ("deny", 'tenant.kind == "university" && job.accelerators.count > 4', None, None),
    ("deny", 'hardware.tpp > 4000.0 && !("3A090.a" in tenant.export_licences)', None, None),
    ("deny", 'site.carbon_gco2_kwh > 500.0 && job.priority == "low"', None, None),
    ("deny", "job.runtime_hours > 24.0 && size(site.region) > 9", None, None),  # us-east-1: 9
    ("deny", "hardware.memory_gb < job.accelerators.min_memory_gb", None, None),
    ("deny", '"blocked" in site.labels || site.region.startsWith("us-west")', None, None),
    ("deny", 'job.labels.exists(k, k == "no-cloud") && site.adapter != "slurm"', None, None),
    ("deny", 'job.labels["team"] == "red"', None, None),  # no such key for most jobs: fails closed
    ("deny", 'site.labels.tier == "gold" && job.priority == "high"', None, None),  # missing key
    ("deny", "job.cpus + 1.0 > 30.0", None, None),  # arithmetic: stays on CEL
    ("deny", 'job.priority == "high" && offer.spot', None, None),
    ("deny", 'offer.zone.endsWith("b") && job.runtime_hours > 12.0', None, "[aliyun-cn-beijing]"),
    ("deny", "tenant.monthly_budget < 1.0 && offer.price_per_hour > 20.0", None, None),
    ("deny", 'offer.instance_type == "a800"', "[sg-partner]", "[shangzhuang-onprem]"),
    ("deny", "job.labels.team < 3", None, None),  # a missing key or a type error: fails closed
    ("allow", 'offer.count >= 2 && tenant.kind == "university"', None, None),
    ("allow", "site.carbon_gco2_kwh < 500.0 || job.cpus > 8.0", None, None),
    ("allow", 'tenant.id == "zhipu-sme"', None, None),
    ("allow", 'hardware.vendor == "Huawei" || offer.spot', None, None),
]


def _policy(tmp: Path, picks: tuple[int, ...], default: str) -> Policy:
    text = (CONFIGS / "policy.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(accelerators|regimes): (\w+\.yaml)", rf"\1: {CONFIGS}/\2", text)
    text = text.replace("file: catalog/", f"file: {CONFIGS}/catalog/")
    text = text.replace("  default: allow", f"  default: {default}")
    text = text.replace("operator_countries: [US]", "operator_countries: [XX]")  # let rules see every site
    for i in picks:
        effect, expr, tenants, sites = RULES[i]
        if effect == "allow" and default == "allow":
            continue
        text += f"    - id: fuzz-{i}\n      {effect}: '{expr}'\n"
        text += f"      reason: 'fuzz {i}: {{accelerator}} at {{site}}'\n"
        text += f"      tenants: {tenants}\n" if tenants else ""
        text += f"      sites: {sites}\n" if sites else ""
    path = tmp / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path)


jobs = st.builds(
    lambda count, any_of, priority, hours, labels, cpus, spot, memory, residency: JobSpec.model_validate(
        {
            "name": "d",
            "command": ["run"],
            "runtime_estimate": f"{hours}h",
            "priority": priority,
            "labels": labels,
            "spot": spot,
            "data_residency": residency,
            "resources": {
                "cpus": cpus,
                "accelerators": {
                    "count": count if any_of or count else 0,
                    "any_of": any_of,
                    "min_memory_gb": memory,
                },
            },
        }
    ),
    st.sampled_from([0, 1, 4, 8]),
    st.lists(
        st.sampled_from(["A800", "A100", "H100", "L20", "T4", "Ascend910B", "H20"]), max_size=2, unique=True
    ),
    st.sampled_from(["low", "normal", "high"]),
    st.integers(1, 48),
    st.sampled_from([{}, {"team": "red"}, {"no-cloud": "1"}]),
    st.sampled_from([1, 16, 32]),
    st.sampled_from(["allowed", "never", "required"]),
    st.sampled_from([0, 40, 90]),
    st.sampled_from(["any", "any", "any", "cn-mainland"]),
)


def _catalog(offers: list[Offer], seed: int) -> list[Offer]:
    """Every offer, some twice, with random prices, markets, zones and waits."""
    rng = random.Random(seed)
    return [
        o.model_copy(
            update={
                "price_per_hour": rng.choice([0.5, 30.0, 250.0, o.price_per_hour]),
                "spot": rng.random() < 0.5,
                "zone": rng.choice([o.zone, f"{o.zone}b"]),
                "expected_wait_s": rng.choice([0.0, 600.0]),
            }
        )
        for o in offers + rng.sample(offers, len(offers) // 2)
    ]


def _seen(e: Explanation) -> list[Any]:
    chosen = e.chosen.offer if e.chosen else None
    return [chosen, *((s.offer, s.allowed, s.reasons, s.score, dict(s.terms)) for s in e.offers)]


def _decide(
    policy: Policy, job: JobSpec, tenant: str, offers: list[Offer], *, fast: bool, cold: bool
) -> list[Any]:
    """What a decision shows (read while the mode is set: the explanation is built lazily)."""
    policy.rules.fast = fast
    if cold:
        policy.rules.clear()
        forget_snapshots()
    try:
        return _seen(place(job, TenantId(tenant), offers, policy, PlacementContext()))
    finally:
        policy.rules.fast = True


_POLICIES: dict[tuple[tuple[int, ...], str], Policy] = {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(st.booleans(), min_size=len(RULES), max_size=len(RULES)).map(
        lambda on: tuple(i for i, x in enumerate(on) if x)
    ),
    default=st.sampled_from(["allow", "deny"]),
    data=st.data(),
)
def test_fast_rule_path_decides_like_the_plain_cel_path(
    tmp_path_factory: Any, offers: list[Offer], picks: tuple[int, ...], default: str, data: st.DataObject
) -> None:
    key = (picks, default)
    policy = _POLICIES.get(key) or _POLICIES.setdefault(
        key, _policy(tmp_path_factory.mktemp("p"), picks, default)
    )
    catalog = _catalog(offers, data.draw(st.integers(0, 2**32)))
    for _ in range(4):  # several jobs share the fast path's memos, as a live queue does
        job = data.draw(jobs)
        tenant = data.draw(st.sampled_from(["pku-nlp", "zhipu-sme", "sg-partner", "nobody"]))
        plain = _decide(policy, job, tenant, catalog, fast=False, cold=True)
        assert _decide(policy, job, tenant, catalog, fast=True, cold=True) == plain, (job, tenant)
        assert _decide(policy, job, tenant, catalog, fast=True, cold=False) == plain, (job, tenant)


@pytest.mark.parametrize("first", ["T4", "H100", "Ascend910B"])
def test_a_rule_on_site_and_hardware_decided_early_per_class_decides_like_the_plain_path(
    tmp_path: Path, offers: list[Offer], first: str
) -> None:
    """A rule reading the site and the accelerator is decided early by either alone (a non-US
    site, or hardware outside 3A090.a) once per class of sites or accelerators; whichever comes
    first, its early answer must not reach a site or accelerator of another class."""
    policy = _policy(tmp_path, (1,), "allow")  # 3A090.a hardware at a US site, for an SME
    job = JobSpec.model_validate(
        {
            "name": "d",
            "command": ["run"],
            "runtime_estimate": "1h",
            "resources": {"accelerators": {"count": 1}},
        }
    )
    catalog = sorted(offers, key=lambda o: o.accelerator != first)  # that accelerator's offers seen first
    plain = _decide(policy, job, "zhipu-sme", catalog, fast=False, cold=True)
    denied = [o for o, allowed, reasons, *_ in plain[1:] if ("fuzz-1",) in {r[:1] for r in reasons}]
    assert denied and len(denied) < len(plain) - 1  # the rule denies some offers, not all
    assert _decide(policy, job, "zhipu-sme", catalog, fast=True, cold=True) == plain
