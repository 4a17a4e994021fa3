"""What refuses a job: the rules that reject the offers its hardware request fits. Pure.

Placement stops at an offer's first failing rule, and the hardware filter runs after the site
and tenant rules, so a rejected offer's reasons need not say whether the job would fit it: an
export rule that rejects a 1-GPU instance is no reason a 64-GPU job was refused. `refusal_rules`
checks the hardware fit of every offer itself, then names the rules that rejected the offers
the job fits, or, where it fits none, how it misses them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from broker.model import JobSpec, Offer
from broker.placement._env import Env, group_offers
from broker.placement.core import rejection_summary
from broker.placement.hardware import filter_hardware_model, filter_hardware_size
from broker.placement.types import Explanation, PlacementContext, Reason
from broker.policy import Policy


def hardware_fits(
    spec: JobSpec, tenant: str, offers: Sequence[Offer], policy: Policy, ctx: PlacementContext
) -> tuple[set[tuple[str, int]], list[Reason]]:
    """The offers the job's hardware request fits (`fit_id`s), and the first hardware reason of
    each offer it does not fit: too small ones of a model it accepts first (the nearest misses)."""
    env = Env(spec, tenant, policy, ctx)
    fits: set[tuple[str, int]] = set()
    small: list[Reason] = []
    kept, rejected = filter_hardware_model(group_offers(offers, policy), env)
    for g in kept:
        ok, off = filter_hardware_size(g, g.offers, env)
        fits.update(fit_id(o) for o in ok)
        # the largest first: "a800 has 8 x A800; the job needs 64", not the 1-card slice's
        small.extend(reasons[0] for _, reasons in sorted(off, key=lambda r: -r[0].count) if reasons)
    return fits, small + [reasons[0] for g, reasons in rejected for _ in g.offers if reasons]


def fit_id(offer: Offer) -> tuple[str, int]:
    """An offer as the hardware fit tells it: its key and its accelerators. An on-prem partition's
    slices (1, 2, 4, 8 cards) share one key: by key alone, a misfit slice counted as fitting and
    its `hardware.fit` outvoted the rule that refused the one slice the job fits."""
    return offer.key, offer.count


def refusal_rules(
    expl: Explanation,
    spec: JobSpec,
    tenant: str,
    offers: Sequence[Offer],
    policy: Policy,
    ctx: PlacementContext,
) -> list[tuple[str, int, str]]:
    """(rule, offers, one message) of what refuses the job, the commonest first: the rules that
    rejected offers it fits (each offer counted for its first rule); none fits: its misfits."""
    fits, misses = hardware_fits(spec, tenant, offers, policy, ctx)
    blocking = [s.reasons[0] for s in expl.offers if not s.allowed and s.reasons and fit_id(s.offer) in fits]
    return _counted(blocking or misses)


def _counted(reasons: list[Reason]) -> list[tuple[str, int, str]]:
    counts = Counter(r.rule for r in reasons)
    first = {r.rule: r.message for r in reversed(reasons)}
    return [(rule, n, first[rule]) for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def refusal_summary(
    expl: Explanation, spec: JobSpec, tenant: str, policy: Policy, ctx: PlacementContext
) -> list[Reason]:
    """`rejection_summary`'s reasons, what refuses the job first (`refusal_rules`' order): a
    rejected job's decision leads with why, not with whichever rule the filter order met first."""
    rules = refusal_rules(expl, spec, tenant, [s.offer for s in expl.offers], policy, ctx)
    rank = {rule: i for i, (rule, _, _) in enumerate(rules)}
    said = {message for _, _, message in rules}
    summary = rejection_summary(expl)
    # (placement stops at an offer's first rule: a misfit it never checked is added from the check)
    summary += [Reason(rule, message) for rule, _, message in rules if Reason(rule, message) not in summary]
    return sorted(summary, key=lambda r: (rank.get(r.rule, len(rank)), r.message not in said))
