"""Filter: the operator's CEL rules. Deny overrides allow; verdicts are memoized per group.

Rules that do not read `offer` are decided once per (site, hardware, tenant, job
projection); rules that read `offer` once per distinct projection of the offer fields read.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from operator import attrgetter
from typing import Any

from broker.compliance.plan import Plan
from broker.compliance.rules import DEFAULT_DENY, RuleSet
from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, OfferKeep, OfferRejections, per_group
from broker.placement.parts import Part
from broker.placement.types import Reason


def _variables(g: Group, env: Env, offer: dict[str, Any] | None = None) -> dict[str, Any]:
    policy = env.policy
    out = {
        "job": env.job_vars(),
        "tenant": policy.tenant_variables(env.tenant_id),
        "site": policy.site_variables(g.site_id),
        "hardware": g.hw.variables,
    }
    if offer is not None:
        out["offer"] = offer
    return out


def offer_variables(o: Offer, env: Env) -> dict[str, Any]:
    rate = env.policy.rate(o.currency or env.policy.currency) or 0.0
    return {
        "instance_type": o.instance_type,
        "accelerator": o.accelerator or "",
        "count": o.count,
        "spot": o.spot,
        "price_per_hour": o.price_per_hour * rate,
        "currency": o.currency,
        "region": o.region,
        "zone": o.zone,
    }


def _offer_field(o: Offer, name: str, env: Env) -> Any:
    """One field of the CEL `offer` variable, without building the whole mapping."""
    if name == "price_per_hour":
        return o.price_per_hour * (env.policy.rate(o.currency or env.policy.currency) or 0.0)
    if name == "accelerator":
        return o.accelerator or ""
    return getattr(o, name)


def _projection(env: Env) -> Callable[[Offer], Any]:
    """An offer's values of every offer field a rule reads (what its offer-rule verdicts depend on)."""
    names = [p[1] for p in env.policy.rules.offer_paths]
    if names and all(n not in ("price_per_hour", "accelerator") for n in names):
        return attrgetter(*names)
    return lambda o: tuple(_offer_field(o, name, env) for name in names)


def _offer_context(g: Group, o: Offer, env: Env) -> dict[str, Any]:
    return _variables(g, env, offer_variables(o, env))


def _offer_labels(g: Group, o: Offer, env: Env) -> dict[str, str]:
    return {**g.labels(env), "instance_type": o.instance_type}


def _plan(env: Env) -> Plan:
    plan: Plan | None = env.rule_plan
    if plan is None:
        policy = env.policy
        plan = env.rule_plan = policy.rules.plan(
            env.tenant_id, env.job_fp, env.job_vars, partial(policy.tenant_variables, env.tenant_id)
        )
    return plan


def filter_rules(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Apply the rules that do not read `offer` (and default-deny when no offer rule can allow)."""
    rules = env.policy.rules
    if not rules.group_rules and not rules.default_deny:
        return groups, []
    kept: list[Group] = []
    rejected: GroupRejections = []
    tenant, fp = env.tenant_id, env.job_fp
    plan = _plan(env)
    final = not rules.offer_rules
    for g in groups:
        key = ("g", g.site_id, g.accelerator, tenant, fp)
        denials, allowed = rules.evaluate(
            key,
            partial(_variables, g, env),
            g.site_id,
            tenant,
            partial(g.labels, env),
            offer=False,
            plan=plan,
            hardware=g.accelerator,
        )
        reasons = [Reason(*d) for d in denials]
        if final and rules.default_deny and not allowed:
            reasons.append(Reason(*DEFAULT_DENY))
        if reasons:
            rejected.append((g, tuple(reasons)))
        else:
            kept.append(g)
    return kept, rejected


def filter_offer_rules(g: Group, offers: list[Offer], env: Env) -> tuple[list[Offer], OfferRejections]:
    """Apply the rules that read `offer`, per distinct projection of the fields they read."""
    rules = env.policy.rules
    if not rules.offer_rules:
        return offers, []
    kept: list[Offer] = []
    rejected: OfferRejections = []
    tenant, fp = env.tenant_id, env.job_fp
    plan = _plan(env)
    fast_clear = rules.fast and not plan.offer  # no offer rule can match this job
    if fast_clear and not rules.default_deny:
        return offers, []
    group_allowed = rules.evaluate(
        ("g", g.site_id, g.accelerator, tenant, fp),
        lambda: _variables(g, env),
        g.site_id,
        tenant,
        lambda: g.labels(env),
        offer=False,
        plan=plan,
        hardware=g.accelerator,
    )[1]
    if fast_clear:  # one verdict for every offer: the default, unless a group rule allowed
        if not group_allowed:
            return [], [(o, (Reason(*DEFAULT_DENY),)) for o in offers]
        return offers, []
    project = _projection(env)
    local: dict[Any, tuple[Reason, ...]] = {}
    for o in offers:
        ofp = project(o)
        reasons = local.get(ofp)
        if reasons is None:
            key = ("o", g.site_id, g.accelerator, tenant, fp, ofp)
            denials, allowed = rules.evaluate(
                key,
                partial(_offer_context, g, o, env),
                g.site_id,
                tenant,
                partial(_offer_labels, g, o, env),
                offer=True,
                plan=plan,
                hardware=g.accelerator,
            )
            found = [Reason(*d) for d in denials]
            if rules.default_deny and not (allowed or group_allowed):
                found.append(Reason(*DEFAULT_DENY))
            reasons = local[ofp] = tuple(found)
        if reasons:
            rejected.append((o, reasons))
        else:
            kept.append(o)
    return kept, rejected


def keep_rules(env: Env) -> GroupKeep | None:
    """`filter_rules`' kept groups, per site / hardware verdicts and no reasons (None: no rule applies)."""
    rules = env.policy.rules
    if not rules.group_rules and not rules.default_deny:
        return None
    plan = _plan(env)
    need_allow = rules.default_deny and not rules.offer_rules
    if not rules.fast:
        return lambda groups: filter_rules(groups, env)[0]
    policy = env.policy
    job, tenant, site = env.job_vars(), policy.tenant_variables(env.tenant_id), policy.site_variables

    def variables(g: Group) -> dict[str, Any]:  # `_variables`, with the job's and tenant's read once
        return {"job": job, "tenant": tenant, "site": site(g.site_id), "hardware": g.hw.variables}

    return lambda groups: rules.keep_groups(plan, groups, variables, need_allow)


def _offer_keys(plan: Plan, rules: RuleSet) -> tuple[bool, bool]:
    """Whether the plan's offer verdicts depend on the site, on the hardware: only when a live
    offer rule reads (or is scoped to) it, as the folds' own memo keys say."""
    return (
        any(live.by_site or rules.rules[live.index].sites is not None for live in plan.offer),
        any(live.by_hardware for live in plan.offer),
    )


def keep_offer_rules(env: Env) -> OfferKeep | None:
    """`filter_offer_rules`' kept offers (None: every offer, no offer rule can match this job)."""
    rules = env.policy.rules
    if not rules.offer_rules:
        return None
    plan = _plan(env)
    if not rules.fast:
        return per_group(filter_offer_rules, env)
    default_deny = rules.default_deny
    if not plan.offer and not default_deny:
        return None
    project, tenant = _projection(env), env.tenant_id
    folds = rules.folds(plan)
    by_site, by_hardware = _offer_keys(plan, rules)
    seen: dict[tuple[Any, ...], tuple[bool, bool]] = {}

    def verdict(g: Group, o: Offer, ofp: Any, key: tuple[Any, ...]) -> tuple[bool, bool]:
        if key not in seen:  # (denied, allowed): asked of the folds once per decision
            seen[key] = folds.offer_verdict(g.site_id, g.accelerator, ofp, partial(_offer_context, g, o, env))
        return seen[key]

    def keep_group(g: Group, offers: list[Offer]) -> list[Offer]:
        # under default deny an allow among the group rules allows every offer of the group
        group_allowed = (
            default_deny
            and rules.group_verdict(plan, g.site_id, tenant, g.accelerator, partial(_variables, g, env))[1]
        )
        if not plan.offer:
            return offers if group_allowed else []
        site, hardware = g.site_id if by_site else None, g.accelerator if by_hardware else None
        if type(offers) is Part and offers.kept:  # its offers by projection, kept with the snapshot
            classes = offers.classes(rules, project)  # (`project` reads the rules' offer paths, rates)
            marks = []
            for ofp, at in classes:
                key = (site, hardware, ofp)
                denied, allowed = verdict(g, offers[at[0]], ofp, key)
                marks.append(not denied and (allowed or group_allowed or not default_deny))
            if all(marks):
                return offers
            return offers.keeping(rules, classes, tuple(marks)) if any(marks) else []
        local: dict[Any, bool] = {}
        picked = []
        for i, o in enumerate(offers):
            ofp = project(o)
            ok = local.get(ofp)
            if ok is None:
                key = (site, hardware, ofp)
                denied, allowed = verdict(g, o, ofp, key)
                ok = local[ofp] = not denied and (allowed or group_allowed or not default_deny)
            if ok:
                picked.append(i)
        if len(picked) == len(offers):
            return offers  # all kept: the same list
        if type(offers) is Part:  # the offers of a part that fit the job: a part still (its array's rows)
            return offers.subset(picked) if picked else []
        return [offers[i] for i in picked]

    return lambda pairs: [(g, kept) for g, offers in pairs if (kept := keep_group(g, offers))]
