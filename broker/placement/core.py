"""`place()`: the one pure decision path (dispatch, bursting, the simulator and explain call it).

filter groups (site x hardware) -> filter each kept group's offers -> score -> rank.
Cheap Python filters run first; CEL rules run last and are memoized per group.

Offers are prepared once per snapshot (`broker.placement.prepared`): grouped by (site,
accelerator) and indexed by accelerator name, so a decision only looks at the groups whose
hardware fits the job (a CPU-only job sees CPU groups only). Per snapshot, two memos:
  * job shape (tenant, every job field a filter or reason reads, the CEL job projection,
    blocked and unhealthy sites) -> the groups and offers passing every filter;
  * shape x runtime x voucher balances -> the scored allowed offers and the best one.
The rejected part of the explanation (every other offer with its reasons, input order) is
built only when `Explanation.offers` is read, by the same filters over every group.

Faster entry point: `prepare_offers(offers, policy)` returns a `PreparedOffers` (a read-only
`Sequence[Offer]`) that `place()` accepts in place of the offers; build it once per offer
snapshot (a simulator run, a dispatcher pass) and pass it to every decision. A plain
sequence works too: the same list object holding the same offer objects (checked by
identity, O(n) pointer compares) reuses its snapshot; a new or changed one is prepared again.
Results are identical either way (tests/placement/test_prepared.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from broker.model import JobSpec, Offer, TenantId
from broker.placement._env import Env, Group
from broker.placement.cost import covered
from broker.placement.pipeline import passing, passing_plain
from broker.placement.prepared import PreparedOffers, snapshot
from broker.placement.rank import rank
from broker.placement.rejected import rejections
from broker.placement.scored import PerHour, Scored, score_all, score_columns
from broker.placement.types import Explanation, PlacementContext, Reason, ScoredOffer
from broker.policy import Policy

_INF = float("inf")
_NO_TERMS: dict[str, float] = {}


def place(
    spec: JobSpec, tenant: TenantId, offers: Sequence[Offer], policy: Policy, ctx: PlacementContext
) -> Explanation:
    """Rank `offers` for `spec` of `tenant` under `policy`; pure and deterministic.

    Every offer appears in the result: allowed ones best-first (the failover order), then
    rejected ones in input order, each with the rule ids and sentences that rejected it.
    `offers` may be a `PreparedOffers` (see `prepare_offers`): same result, less work.
    """
    prepared = snapshot(offers, policy)
    prepared.decided += 1
    env = Env(spec, tenant, policy, ctx)
    if ctx.unhealthy_sites or ctx.drained_sites:  # the rejections are built lazily: keep what this call saw
        env.ctx = replace(
            ctx, unhealthy_sites=dict(ctx.unhealthy_sites), drained_sites=dict(ctx.drained_sites)
        )
    key = _shape_key(env)
    shape = prepared.shapes.get(key)
    if shape is None:
        shape = _passing(prepared, env)
        prepared.remember(prepared.shapes, key, shape, 1 + shape.size)
    decision = _decide(prepared, key, shape, env)
    chain = policy.objective.rank

    def ranking() -> tuple[ScoredOffer, ...]:
        rejected = shape.rejected
        if rejected is None:
            rejected = shape.rejected = _rejections(prepared, env)
            prepared.charge(prepared.shapes, len(rejected))
        return (*decision.ranked(chain), *rejected)

    return Explanation(
        decision.chosen,
        None,
        policy.hash,
        currency=policy.currency,
        sites=policy.site_facts,
        decided_at=ctx.now,
        ranking=ranking,
        allowed=partial(decision.ranked, chain),
        unranked=decision.allowed,
    )


class _Shape:
    """What a job shape may use in a snapshot: each passing group with its passing offers."""

    __slots__ = ("_per_hour", "_top", "kept", "rejected", "size")

    def __init__(self, kept: list[tuple[Group, list[Offer]]]) -> None:
        self.kept = kept
        self.size = sum(len(offers) for _, offers in kept)
        self.rejected: tuple[ScoredOffer, ...] | None = None
        self._top: float | None = None
        self._per_hour: PerHour | None = None

    def per_hour(self, policy: Policy) -> PerHour:
        """The runtime-independent part of the shape's scores (built once, reused by every runtime)."""
        if self._per_hour is None:
            self._per_hour = PerHour(self.kept, policy)
        return self._per_hour

    def top_hourly(self, policy: Policy) -> float:
        """The highest price per hour (policy currency) among the kept offers."""
        if self._top is None:
            self._top = max(self.per_hour(policy).hourly, default=0.0)
        return self._top


class _Decision:
    """The scored allowed offers (group order, then input order, built when read) and the best."""

    __slots__ = ("_ranked", "allowed", "chosen")

    def __init__(self, allowed: Scored) -> None:
        self.allowed = allowed
        self.chosen = allowed.chosen
        self._ranked: tuple[ScoredOffer, ...] | None = None

    def ranked(self, chain: Sequence[str]) -> tuple[ScoredOffer, ...]:
        if self._ranked is None:
            self._ranked = tuple(rank(self.allowed.items, chain))
        return self._ranked


def _shape_key(env: Env) -> tuple[Any, ...]:
    """Every input the filters (and their reasons) read, besides the snapshot and the policy."""
    ctx = env.ctx
    sick = ctx.unhealthy_sites
    return (
        env.tenant_id,
        env.count,
        env.spec.resources.accelerators.any_of,
        env.min_memory_gb,
        env.cpus,
        env.memory_gb,
        env.spot,
        env.price_cap,
        env.residency,
        env.nodes,
        env.job_fp,
        ctx.blocked,
        frozenset(ctx.block_reasons.items()) if ctx.block_reasons else None,
        frozenset(sick.items()) if sick else None,
        frozenset(ctx.drained_sites.items()) if ctx.drained_sites else None,
        frozenset(ctx.no_images.items()) if env.spec.image and ctx.no_images else None,
    )


def _passing(prepared: PreparedOffers, env: Env) -> _Shape:
    """Groups and offers passing every filter; only groups whose hardware can fit are looked at."""
    candidates = prepared.candidates(env.count, env.any_of)
    if env.policy.rules.fast:  # a snapshot's second decision on builds (then reads) its groups' parts
        return _Shape(passing(candidates, env, parts=prepared.decided > 1))
    return _Shape(passing_plain(candidates, env))  # the reference path (`RuleSet.fast = False`)


def _decide(prepared: PreparedOffers, key: tuple[Any, ...], shape: _Shape, env: Env) -> _Decision:
    """Score the shape's offers for this runtime and voucher state, and pick the best (memoized)."""
    tenant = env.tenant
    balances = env.ctx.voucher_balances
    vouchers: tuple[float | None, ...] | None = None
    if tenant is not None and tenant.vouchers and balances is not None:
        # A balance covering the dearest kept offer's whole cost (discount <= 1) gives the same
        # voucher terms as any larger one: key it as "ample" so spending elsewhere keeps the memo.
        ample = shape.top_hourly(prepared.policy) * (env.machine_h * prepared.policy.objective.price)
        vouchers = tuple(None if (b := balances.get(v.id, 0.0)) >= ample else b for v in tenant.vouchers)
    # A voucher expiring during the run pays its part before then: a key that moves with `now`
    # only while a run would outlast one (1.0 for every voucher without an `expires`).
    parts = tuple(covered(env, v) for v in tenant.vouchers if v.expires) if tenant is not None else ()
    dkey = (key, env.machine_h, vouchers, parts)
    decision: _Decision | None = prepared.decisions.get(dkey)
    if decision is None:
        if env.policy.rules.fast:
            offers, columns = score_columns(shape.per_hour(prepared.policy), env)
        else:  # the reference path
            offers, columns = score_all(shape.kept, env)
        decision = _Decision(Scored(offers, columns, prepared.policy.objective.rank))
        prepared.remember(prepared.decisions, dkey, decision, 1 + len(offers))
    return decision


def _rejections(prepared: PreparedOffers, env: Env) -> tuple[ScoredOffer, ...]:
    """Every rejected offer of the snapshot with its reasons (a sick site's last), in input order."""
    rejected = rejections(list(prepared.groups), env)
    if not rejected:
        return ()
    position = prepared.positions
    rejected.sort(key=lambda pair: position[id(pair[0])])
    return tuple(ScoredOffer(o, False, r, _INF, _NO_TERMS) for o, r in rejected)


def rejection_summary(explanation: Explanation) -> list[Reason]:
    """Distinct reasons across rejected offers (for FAILED_PRECONDITION details): the rules that
    block the job first, hardware misfits (what the job does not want) last; first-seen order."""
    seen: dict[Reason, None] = {}
    for s in explanation.offers:
        if not s.allowed:
            for r in s.reasons:
                seen.setdefault(r, None)
    return sorted(seen, key=lambda r: r.rule.startswith(HARDWARE_PREFIX))


HARDWARE_PREFIX = "hardware."
"""Rules about the job's own hardware request: they say what the job does not want, not
what stops it, so summaries list them after the rules that block the job."""


def rejection_counts(explanation: Explanation) -> list[tuple[str, int, str]]:
    """(rule, offers it rejected, one message) per rule, HTCondor `-better-analyze` style.

    Each rejected offer counts for its first rule. Rules that block offers the job could
    otherwise use come first (most offers first), hardware misfits last.
    """
    counts: dict[str, list[Any]] = {}
    for s in explanation.offers:
        if not s.allowed and s.reasons:
            first = s.reasons[0]
            entry = counts.setdefault(first.rule, [0, first.message])
            entry[0] += 1
    ordered = sorted(counts.items(), key=lambda kv: (kv[0].startswith(HARDWARE_PREFIX), -kv[1][0], kv[0]))
    return [(rule, n, message) for rule, (n, message) in ordered]
