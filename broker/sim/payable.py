"""Jobs no budget can pay in the cloud, for the references (the LP bound, the offline schedule).

A strategy refuses a cloud offer whose cash share (after the tenant's best voucher for the
site) exceeds what is left of the tenant's monthly budget or of the global cap, so a job whose
every allowed cloud offer costs more cash than a whole month's budget is never burst by any
strategy: it runs on-prem or never starts. The references price such a job's cloud run all the
same unless told; then the bound at zero late jobs and the "feasible" offline schedule charge
for work no schedule can pay for, and `cost_ratio` / `offline_ratio` fall below 1. (Several jobs
that together overrun a month's budget are the budget rows' and the offline purse's business:
`broker.sim.budgets`.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from broker.burst.inputs import onprem_sites
from broker.burst.money import estimate_cost, split_cost, tenant_money
from broker.burst.spot import spot_refusal
from broker.model import Offer
from broker.policy import Policy
from broker.sim.expected import estimate_of
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob

SLACK = 1e-6
"""Cash within this of the limit counts as payable (the strategies refuse above limit + 1e-9)."""


def without_unpayable_cloud(
    jobs: Sequence[SimJob], decided: Sequence[SimJob], facts: Sequence[JobFacts], policy: Policy
) -> list[JobFacts]:
    """`facts` with no cloud option for each job no strategy can pay to burst.

    `jobs` are the references' (actual runtimes), `decided` the same jobs as the policy sees
    them. Only a job the policy does not expect to be shorter than it is qualifies (its costs
    and spot restarts then are at least the actual ones), and each offer is priced at its
    least: spot as if never interrupted, as the baselines' budget check prices it.
    """
    limits: dict[str, tuple[float | None, Mapping[str, float]]] = {}
    home = onprem_sites(policy)
    out = list(facts)
    for i, (job, seen, f) in enumerate(zip(jobs, decided, facts, strict=True)):
        if f.cloud_cost is None or estimate_of(seen) < job.runtime_s:
            continue
        if job.tenant not in limits:
            money = tenant_money(policy, job.tenant, ())  # a month's start: nothing spent
            left = [x for x in (money.budget_left, money.global_left) if x is not None]
            limits[job.tenant] = (min(left) if left else None, money.voucher_balances)
        limit, balances = limits[job.tenant]
        if limit is None:
            continue
        clouds = [o for o in f.allowed if o.site not in home]
        if f.cloud_cost - _most_voucher(policy, job.tenant, clouds, f.cloud_cost, balances) <= limit + SLACK:
            continue  # a budget this large (or a voucher) may pay the cheapest: keep the option
        if clouds and all(
            split_cost(job.tenant, o.site, estimate_cost(job.spec, o, policy), policy, balances).cash
            > limit + SLACK
            for o in clouds
        ):
            out[i] = dataclasses.replace(f, cloud_cost=None, cloud_by_cost=(), cloud_floor=None)
    return out


def _most_voucher(
    policy: Policy, tenant_id: str, clouds: Sequence[Offer], cost: float, balances: Mapping[str, float]
) -> float:
    """The most a voucher of the tenant pays of a `cost` bill at one of the `clouds` sites.

    Each site's voucher and share are the burst's own (`split_cost`): its best voucher there pays
    its discount, up to its balance; another voucher with a larger balance pays nothing there.
    """
    return max(
        (split_cost(tenant_id, site, cost, policy, balances).voucher for site in {o.site for o in clouds}),
        default=0.0,
    )


def with_misjudged_spot(
    jobs: Sequence[SimJob], decided: Sequence[SimJob], facts: Sequence[JobFacts], policy: Policy
) -> list[JobFacts]:
    """`facts` with the spot offers a strategy may take on a runtime estimate shorter than the
    job's runtime in its cloud floor (the bound's cloud option): the restart limit left them out for
    the actual runtime, but the policy checks it on the estimate, and a run the world does not
    interrupt is billed the spot price alone (a policy run under the bound had 0 late jobs)."""
    out = list(facts)
    for i, (job, seen, f) in enumerate(zip(jobs, decided, facts, strict=True)):
        if not f.over_limit_spot:
            continue
        taken: tuple[Offer, ...] = ()
        if estimate_of(seen) < job.runtime_s:
            spec = seen.spec
            taken = tuple(o for o in f.over_limit_spot if not spot_refusal(spec, o, policy, slack_h=None))
        # What is left in `over_limit_spot` is what a strategy may take (the budget rows read it).
        if not taken:
            out[i] = dataclasses.replace(f, over_limit_spot=())
            continue
        least = min(estimate_cost(job.spec, o, policy) for o in taken)
        floor = least if f.cloud_floor is None else min(f.cloud_floor, least)
        out[i] = dataclasses.replace(f, cloud_floor=floor, over_limit_spot=taken)
    return out


def reference_facts(
    jobs: Sequence[SimJob], decided: Sequence[SimJob], facts: Sequence[JobFacts], policy: Policy
) -> list[JobFacts]:
    """The facts the references price: no cloud for a job no budget pays, and the spot a short
    estimate lets a strategy take."""
    return with_misjudged_spot(jobs, decided, without_unpayable_cloud(jobs, decided, facts, policy), policy)
