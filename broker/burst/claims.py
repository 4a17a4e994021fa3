"""Late claims: jobs projected late on an on-prem partition and waiting to burst there at their
last responsible moment, with the premium their burst would cost. Pure.

Capacity that frees in a busy partition goes to whichever job the dispatch order names first,
however little the cloud would charge that job; a job behind it then bursts, however much. A
late claim lets the decision swap them (`broker.burst.decision`, rule 2): a job that could start
now yields the capacity to a late job that fits it and whose burst would cost more than its own
(the premium: cloud total minus the on-prem cost, in the policy's objective). The clairvoyant
offline schedule bursts the lowest premiums the same way. The simulator and the live dispatcher
keep one `LateClaims` each and hand its view to every decision (`BurstInputs.late_claims`).
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.burst.inputs import BurstInputs
from broker.decision import Action, Decision, DecisionFacts
from broker.policy import Policy

Claim = tuple[int, float]
"""(units the late job needs, the premium its burst would cost)."""


class LateClaims:
    """Per on-prem partition key, the late jobs committed to burst and their claims."""

    def __init__(self) -> None:
        self.by_partition: dict[str, dict[str, Claim]] = {}
        self.where: dict[str, tuple[str, str]] = {}
        """Job -> (partition, tenant) of its claim."""
        self.yields: set[str] = set()
        """Partitions where a job yielded capacity since the claims there were last offered it."""

    def put(
        self, job: str, partition: str | None, units: int = 0, premium: float = 0.0, tenant: str = ""
    ) -> None:
        """The job's latest decision: a late claim on `partition` (None: none, e.g. it started)."""
        old = self.where.pop(job, None)
        if old is not None:
            claims = self.by_partition[old[0]]
            del claims[job]
            if not claims:
                del self.by_partition[old[0]]
        if partition is not None:
            self.by_partition.setdefault(partition, {})[job] = (units, premium)
            self.where[job] = (partition, tenant)

    def view(
        self, ratios: Mapping[str, float] | None = None, tenant: str = "", gap: float = 0.0
    ) -> Mapping[str, Mapping[str, Claim]]:
        """What a decision for `tenant` reads (`BurstInputs.late_claims`): partition -> job -> claim,
        without the claims of tenants whose fair-share ratio is at least `gap` times its own
        (`burst.firm_deadline_share_gap`, as `broker.fairshare.held_back`): fair share owes it
        the capacity, so it does not yield it to them."""
        if not ratios or gap <= 0 or not self.where:
            return self.by_partition
        far = {t for t in ratios if t != tenant and owes(ratios, t, tenant, gap)}
        if not far:
            return self.by_partition
        out: dict[str, dict[str, Claim]] = {}
        for job, (part, owner) in self.where.items():
            if owner not in far:
                out.setdefault(part, {})[job] = self.by_partition[part][job]
        return out

    def yielded_to(self, partition: str, free: int) -> tuple[str, ...]:
        """After a job yielded capacity on `partition` (`note`): the job whose claim there has the
        highest premium among those `free` units could start, to decide next (none: empty)."""
        if partition not in self.yields:
            return ()
        self.yields.discard(partition)
        claims = self.by_partition.get(partition)
        fits = [(premium, job) for job, (units, premium) in (claims or {}).items() if units <= free]
        return (max(fits)[1],) if fits else ()

    def note(self, decision: Decision, inputs: BurstInputs, need: int) -> None:
        """Remember a decision that yielded: a WAIT on a partition with room for the job now."""
        offer = decision.offer
        if decision.action != Action.WAIT or offer is None or offer.partition not in inputs.late_claims:
            return
        free = inputs.free_units(offer)
        if free is not None and free >= need:
            self.yields.add(offer.partition)


def claim_premium(facts: DecisionFacts, policy: Policy) -> float | None:
    """The premium of a WAIT that commits a late job to burst (None: the decision commits none):
    its cloud total less its on-prem total without the lateness — on-prem priced at the job's
    projected start, as a job free to start now prices its own (with its wait of ~0). Starting
    the late job now saves it that wait too, so the claim understates the swap's gain: a swap
    happens only where it surely pays."""
    if facts.burst_in_s is None or facts.cloud_total_cost is None or facts.onprem_total_cost is None:
        return None
    late_h = max(0.0, (facts.onprem_expected_wait_s or 0) - facts.remaining_wait_s) / 3600
    late_cost = late_h * policy.objective.wait_hour_cost * policy.burst.late_wait_factor
    return facts.cloud_total_cost - (facts.onprem_total_cost - late_cost)


def owes(ratios: Mapping[str, float], over: str, under: str, gap: float) -> bool:
    """`over`'s fair-share ratio is at least `gap` times `under`'s (and above 0, so two idle tenants
    owe nothing): fair share owes `under` the capacity `over` holds. `gap` 0: never."""
    top = ratios.get(over, 0.0)
    return gap > 0 and top > 0 and top >= gap * ratios.get(under, 0.0)
