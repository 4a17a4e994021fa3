"""Independent compliance check of every simulated start: would placement allow that offer alone?"""

from __future__ import annotations

from datetime import timedelta

from broker.model import Offer
from broker.placement import PlacementContext, PreparedOffers, place, prepare_offers
from broker.policy import Policy
from broker.sim.jobs import EPOCH, SimJob


class Auditor:
    """Checks one job in `every` (all when 1), each (job, offer) once."""

    def __init__(self, policy: Policy, every: int) -> None:
        self.policy = policy
        self.every = every
        self._audited: dict[tuple[int, str], bool] = {}
        self._alone: dict[tuple[str, int], PreparedOffers] = {}

    def allows(self, job: SimJob, offer: Offer, t: float) -> bool:
        """Would placement allow this offer alone for this job (at simulated second `t`)?"""
        if job.index % self.every:
            return True
        key = (job.index, offer.key)
        ok = self._audited.get(key)
        if ok is None:
            # On-prem offers of one partition share a key and differ in size.
            alone = self._alone.get((offer.key, offer.count))
            if alone is None:  # prepared once per offer: placement memoizes per job shape on it
                alone = self._alone[(offer.key, offer.count)] = prepare_offers(
                    [offer.model_copy(update={"free": None, "expected_wait_s": 0.0})], self.policy
                )
            ctx = PlacementContext(now=EPOCH + timedelta(seconds=t))
            ok = self._audited[key] = bool(place(job.spec, job.tenant, alone, self.policy, ctx).allowed)
        return ok
