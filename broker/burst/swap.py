"""Stopping patient work rather than bursting urgent work (`burst.preempt_patient`). Pure.

A job about to burst pays the cloud's premium over on-prem. The on-prem units it would need
are often held by patient work (a long max_wait: best-effort jobs) that started minutes
earlier, when nothing urgent was there to take them. Stopping that work, which goes back to
the queue with most of its wait ahead (to run later at home or burst where the cloud is
cheap for it), and running the urgent job in its units loses only the work done since that
start (or its last checkpoint). The clairvoyant offline schedule gets the same by starting
patient work later; an online broker, not knowing what will arrive, can only undo the start.
The simulator and the live dispatcher both ask `swap_for` after a burst decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker.burst.claims import owes
from broker.burst.cloud import onprem_offers
from broker.burst.inputs import demand, onprem_sites
from broker.burst.money import estimate_cost
from broker.decision import Action, Decision
from broker.model import JobSpec, Offer
from broker.policy import Policy
from broker.policy.schema_parts import PreemptPatient


@dataclass(frozen=True, slots=True)
class Preemptible:
    """One running on-prem job, as a candidate to stop."""

    key: str
    """The attempt's id (live) or the job's index (simulator)."""
    partition: str
    """Its `site/partition` key."""
    units: int
    ran_s: float
    """How long its current run has lasted."""
    checkpoint_s: float | None
    """Its checkpoint interval: stopped, it resumes from the last one (None: from the start)."""
    max_wait_s: float
    """Its effective max_wait (how patient it is)."""
    restarts: int
    """Runs it had before this one."""
    gang: bool = False
    tenant: str = ""
    in_quota: bool = False
    """It runs within its tenant's guaranteed quota on the partition (fair share): only that
    tenant's own jobs may stop it."""
    slack_s: float | None = None
    """Seconds until its own start deadline (arrival + max_wait); None: not known."""


@dataclass(frozen=True, slots=True)
class Swap:
    """Stop `victim` and run the bursting job on `offer` (its partition) instead."""

    victim: Preemptible
    offer: Offer
    premium: float
    """What the burst would have cost over running on `offer`, in the policy currency."""
    lost: float
    """The victim's work the stop loses, priced at its partition's `price_hour`."""

    def reason(self, currency: str) -> str:
        """The reason the bursting job's decision gives."""
        return (
            f"stopping patient job on {self.victim.partition} ({self.victim.units} unit(s), "
            f"{lost_s(self.victim) / 60:.0f} min of work lost, {self.lost:.2f} {currency}) to run here: "
            f"bursting would cost {self.premium:.2f} {currency} more (burst.preempt_patient)"
        )


def lost_s(p: Preemptible) -> float:
    """Seconds of work stopping `p` now loses: its run so far, or since its last checkpoint."""
    return work_lost_s(p.ran_s, p.checkpoint_s)


def work_lost_s(ran_s: float, checkpoint_s: float | None) -> float:
    """`lost_s` of a run that has lasted `ran_s` and checkpoints every `checkpoint_s` (None: never)."""
    if checkpoint_s is None or checkpoint_s <= 0:
        return ran_s
    return ran_s % checkpoint_s


def lost_cost(price_hour: float, units: int, lost_work_s: float) -> float:
    """The lost work priced at its partition's `price_hour`."""
    return price_hour * units * lost_work_s / 3600


def may_stop(
    cfg: PreemptPatient, need: int, premium: float, lost: float, *, units: int, max_wait_s: float,
    restarts: int, gang: bool, slack_s: float | None = None,
) -> bool:
    """Whether `burst.preempt_patient` lets a burst whose premium is `premium` stop a running job
    (quotas aside): not a gang, patient enough, not restarted too often, at least `min_slack`
    before its own start deadline, holding the `need` units, losing (`lost`, money) at most
    `max_lost_share` of the premium."""
    if gang or max_wait_s < cfg.min_max_wait.total_seconds() or restarts >= cfg.max_restarts:
        return False
    if slack_s is not None and slack_s < cfg.min_slack.total_seconds():
        return False
    return units >= need and premium > 0 and lost <= cfg.max_lost_share * premium


def partition_prices(policy: Policy) -> dict[str, float]:
    """Each on-prem partition's `price_hour`, by its `site/partition` key."""
    return {f"{s.id}/{p.name}": p.price_hour for s in policy.sites for p in s.partitions}


def swap_for(
    decision: Decision,
    spec: JobSpec,
    policy: Policy,
    running: Sequence[Preemptible],
    tenant: str = "",
    ratios: Mapping[str, float] | None = None,
) -> Swap | None:
    """The patient job to stop instead of this burst of `tenant`'s job, if `burst.preempt_patient`
    allows one: on a partition the job may run on, holding at least the units it needs (units free
    beside it are not counted: live, nothing keeps them for the job while the victim stops), patient
    enough, not restarted too often, not near its own deadline, not another tenant's work within its
    quota nor of a tenant fair share owes (`owed`), losing at most `max_lost_share` of the burst's
    premium; the least lost work first. None: the burst stands."""
    cfg = policy.burst.preempt_patient
    cloud = decision.offer
    if not cfg.enabled or decision.action != Action.RUN or not decision.burst or cloud is None:
        return None
    if decision.explanation is None or spec.resources.nodes > 1:
        return None
    homes = home_offers(decision, policy)
    if not homes:
        return None
    need, prices = demand(spec), partition_prices(policy)
    premiums = burst_premiums(spec, cloud, homes, policy)
    best: Swap | None = None
    for p in running:
        home = homes.get(p.partition)
        if home is None or (p.tenant != tenant and (p.in_quota or owed(ratios, p.tenant, tenant, policy))):
            continue
        premium = premiums[p.partition]
        lost = lost_cost(prices.get(p.partition, 0.0), p.units, lost_s(p))
        if not may_stop(
            cfg, need, premium, lost, units=p.units, max_wait_s=p.max_wait_s, restarts=p.restarts,
            gang=p.gang, slack_s=p.slack_s,
        ):
            continue
        if best is None or (lost, p.key) < (best.lost, best.victim.key):
            best = Swap(p, home, premium, lost)
    return best


def owed(ratios: Mapping[str, float] | None, victim: str, tenant: str, policy: Policy) -> bool:
    """`tenant` is over its own share (ratio above 1, the fair-share order's `ratios`) and at least
    `burst.firm_deadline_share_gap` times `victim`'s ratio: fair share owes `victim`, so a
    cost-driven swap does not take its work for `tenant`. Two tenants both under their share may
    swap however far apart (near 0 any two read "2x" apart). No `ratios`: not known, no bar."""
    if ratios is None or ratios.get(tenant, 0.0) <= 1.0:
        return False
    return owes(ratios, tenant, victim, policy.burst.firm_deadline_share_gap)


def burst_premiums(spec: JobSpec, cloud: Offer, homes: dict[str, Offer], policy: Policy) -> dict[str, float]:
    """What bursting to `cloud` costs over running on each partition's home offer."""
    burst = estimate_cost(spec, cloud, policy)
    return {k: burst - estimate_cost(spec, home, policy) for k, home in homes.items()}


def home_offers(decision: Decision, policy: Policy) -> dict[str, Offer]:
    """The cheapest allowed on-prem offer of each partition the decision weighed (none without
    an explanation)."""
    if decision.explanation is None:
        return {}
    homes: dict[str, Offer] = {}
    for s in onprem_offers(decision.explanation.unranked, onprem_sites(policy)):
        o = s.offer
        got = homes.get(o.partition)
        if got is None or (o.price_per_hour, o.key) < (got.price_per_hour, got.key):
            homes[o.partition] = o
    return homes
