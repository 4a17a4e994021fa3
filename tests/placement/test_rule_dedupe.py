"""Each rule run once per distinct tuple of the values it reads gives the verdicts of running
every rule on every offer in the full CEL context (issue 15, "Cold decisions")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.compliance.rules import RuleSet, render
from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext, forget_snapshots, place
from broker.placement._env import Env, Group
from broker.placement.rules import offer_variables
from broker.policy import Policy, load_policy

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Rules beyond the shipped ones: allow rules, scopes, overlapping paths (a field and its
# parent), whole variables, maps, lists, numbers of both kinds, and rules that fail to run.
EXTRA = [
    ("deny", "job.accelerators.count > 2 && size(job.accelerators.any_of) == 0", None),
    ("deny", 'job["priority"] == "low" && offer.price_per_hour > 200.0', None),
    ("deny", 'job.labels["team"] == "red"', None),  # no such key: cannot run, fails closed
    ("deny", 'site.labels.exists(k, k == "gpu") || hardware.memory_gb < 20.0', None),
    ("allow", 'offer.count >= 2 && tenant.kind == "university"', None),
    ("deny", 'offer.zone.endsWith("b") && job.runtime_hours > 12.0', "[aliyun-cn-beijing, aws-us-east-1]"),
    ("deny", 'hardware.tpp > 4000.0 && !("3A090.a" in tenant.export_licences)', None),
    ("allow", "site.carbon_gco2_kwh < 500.0 || job.cpus > 8.0", None),
    ("deny", 'offer.spot && job.max_wait_hours < 1.0 && site.country == "CN"', None),
    ("deny", "tenant.monthly_budget < 1.0 && offer.price_per_hour > 1.0", None),
]


def _policy(tmp: Path, default: str) -> Policy:
    text = (CONFIGS / "policy.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(accelerators|regimes): (\w+\.yaml)", rf"\1: {CONFIGS}/\2", text)
    text = text.replace("file: catalog/", f"file: {CONFIGS}/catalog/")
    text = text.replace("  default: allow", f"  default: {default}")
    for i, (effect, expr, sites) in enumerate(EXTRA):
        if effect == "allow" and default == "allow":
            continue  # rejected at load: allow rules only matter under default deny
        text += f"    - id: extra-{i}\n      {effect}: '{expr}'\n      reason: 'extra {i} at {{site}}'\n"
        if sites:
            text += f"      sites: {sites}\n"
    path = tmp / f"policy-{default}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path)


def _naive(rules: RuleSet, env: Env, o: Offer) -> tuple[tuple[tuple[str, str], ...], bool]:
    """Every rule in scope run on the full variables of one offer, no memo, no projection."""
    policy = env.policy
    hw = policy.hardware(o.accelerator)
    g = Group(o.site, o.accelerator, policy.site(o.site), hw)
    variables: dict[str, Any] = {
        "job": env.job_vars(),
        "tenant": policy.tenant_variables(env.tenant_id),
        "site": policy.site_variables(o.site),
        "hardware": hw.variables,
        "offer": offer_variables(o, env),
    }
    denials: list[tuple[str, str]] = []
    allowed = False
    for rule in rules.rules:
        if not rule.in_scope(o.site, env.tenant_id):
            continue
        try:
            hit = rule.program.execute(cel.Context(variables)) is True
        except Exception as exc:
            if rule.effect == "deny":
                denials.append(
                    (rule.id, f"rule could not be evaluated ({type(exc).__name__}: {exc}); denied to be safe")
                )
            continue
        labels = {**g.labels(env), "instance_type": o.instance_type if rule.uses_offer else ""}
        if hit and rule.effect == "deny":
            denials.append((rule.id, render(rule.reason, {**labels, "rule": rule.id})))
        allowed = allowed or (hit and rule.effect == "allow")
    return tuple(sorted(denials)), allowed


def _randomized(offers: list[Offer], data: st.DataObject) -> list[Offer]:
    picks = data.draw(st.lists(st.integers(0, len(offers) - 1), min_size=1, max_size=40))
    out = []
    for i in picks:
        o = offers[i]
        out.append(
            o.model_copy(
                update={
                    "price_per_hour": data.draw(st.sampled_from([0.5, 1.0, 30.0, 250.0, o.price_per_hour])),
                    "spot": data.draw(st.booleans()),
                    "zone": data.draw(st.sampled_from([o.zone, f"{o.zone}b", "x-b"])),
                    "count": data.draw(st.sampled_from([1, 2, 8, o.count])),
                }
            )
        )
    return out


jobs = st.builds(
    lambda count, any_of, priority, hours, wait, labels, cpus: JobSpec.model_validate(
        {
            "name": "d",
            "command": ["run"],
            "runtime_estimate": f"{hours}h",
            "max_wait": f"{wait}m",
            "priority": priority,
            "labels": labels,
            "resources": {
                "cpus": cpus,
                "accelerators": {"count": count if any_of or count else 0, "any_of": any_of},
            },
        }
    ),
    st.sampled_from([0, 1, 4, 8]),
    st.lists(st.sampled_from(["A800", "A100", "H100", "L20", "T4", "Ascend910B"]), max_size=2, unique=True),
    st.sampled_from(["low", "normal", "high"]),
    st.integers(1, 48),
    st.integers(10, 600),
    st.sampled_from([{}, {"team": "red"}, {"team": "blue"}]),
    st.sampled_from([1, 16]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(default=st.sampled_from(["allow", "deny"]), data=st.data())
def test_deduplicated_rule_verdicts_equal_every_rule_on_every_offer(
    tmp_path_factory: Any, offers: list[Offer], default: str, data: st.DataObject
) -> None:
    policy = _POLICIES.get(default) or _POLICIES.setdefault(
        default, _policy(tmp_path_factory.mktemp("p"), default)
    )
    rules = policy.rules
    rules.clear()
    sample = _randomized(offers, data)
    for _ in range(3):  # several jobs and tenants share the per-rule memo, as a live queue does
        job = data.draw(jobs)
        tenant = data.draw(st.sampled_from(["pku-nlp", "zhipu-sme", "sg-partner", "nobody"]))
        env = Env(job, TenantId(tenant), policy, PlacementContext())
        for o in sample:
            hw = policy.hardware(o.accelerator)
            g = Group(o.site, o.accelerator, policy.site(o.site), hw)
            variables = {
                "job": env.job_vars(),
                "tenant": policy.tenant_variables(tenant),
                "site": policy.site_variables(o.site),
                "hardware": hw.variables,
            }
            plan = rules.plan(tenant, env.job_fp, env.job_vars, lambda t=tenant: policy.tenant_variables(t))
            ovars = {**variables, "offer": offer_variables(o, env)}
            got_g = rules.evaluate(
                ("test-g", o.site, o.accelerator, tenant, env.job_fp),
                lambda v=variables: v,
                o.site,
                tenant,
                lambda g=g, env=env: g.labels(env),
                offer=False,
                plan=plan,
                hardware=o.accelerator,
            )
            got_o = rules.evaluate(
                (
                    "test-o",
                    o.site,
                    o.accelerator,
                    tenant,
                    env.job_fp,
                    rules.offer_fingerprint(ovars["offer"]),
                ),
                lambda v=ovars: v,
                o.site,
                tenant,
                lambda g=g, o=o, env=env: {**g.labels(env), "instance_type": o.instance_type},
                offer=True,
                plan=plan,
                hardware=o.accelerator,
            )
            got = (tuple(sorted(got_g[0] + got_o[0])), got_g[1] or got_o[1])
            assert got == _naive(rules, env, o), (job, tenant, o)
        # and the whole decision is the same with every memo kept or all of them cleared
        warm = place(job, TenantId(tenant), sample, policy, PlacementContext())
        rules.clear()
        forget_snapshots()
        cold = place(job, TenantId(tenant), sample, policy, PlacementContext())
        assert [(s.offer, s.allowed, s.reasons) for s in warm.offers] == [
            (s.offer, s.allowed, s.reasons) for s in cold.offers
        ]


_POLICIES: dict[str, Policy] = {}
