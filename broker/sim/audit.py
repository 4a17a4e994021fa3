"""Independent compliance check of every simulated start: would placement allow that offer alone?"""

from __future__ import annotations

from datetime import timedelta

from broker.model import JobSpec, Offer
from broker.placement import PlacementContext, PreparedOffers, place, prepare_offers
from broker.policy import Policy
from broker.sim.jobs import SimJob, shape_of


class Auditor:
    """Checks one job in `every` (all when 1), each (job, offer) once.

    With `by_shape` the job is checked as its shape (`shape_spec`: a one-hour stand-in, when no
    rule reads the runtime or name), so placement's memo answers every job of that shape."""

    def __init__(self, policy: Policy, every: int, *, by_shape: bool = True) -> None:
        self.policy = policy
        self.every = every
        self.by_shape = by_shape
        self._audited: dict[tuple[int, str], bool] = {}
        self._alone: dict[tuple[str, int], PreparedOffers] = {}
        self._shapes: dict[tuple[str, int, str, int], tuple[JobSpec, bool]] = {}
        """(tenant, id of a shared shape spec, offer key, count) -> (the spec, the verdict)."""

    def allows(self, job: SimJob, offer: Offer, t: float) -> bool:
        """Would placement allow this offer alone for this job (at simulated second `t`)?"""
        if job.index % self.every:
            return True
        key = (job.index, offer.key)
        ok = self._audited.get(key)
        if ok is None and self.by_shape and job.shape is not None:
            hit = self._shapes.get((job.tenant, id(job.shape), offer.key, offer.count))
            if hit is not None and hit[0] is job.shape:
                ok = self._audited[key] = hit[1]
        if ok is None:
            # On-prem offers of one partition share a key and differ in size.
            alone = self._alone.get((offer.key, offer.count))
            if alone is None:  # prepared once per offer: placement memoizes per job shape on it
                alone = self._alone[(offer.key, offer.count)] = prepare_offers(
                    [offer.model_copy(update={"free": None, "expected_wait_s": 0.0})], self.policy
                )
            ctx = PlacementContext(now=job.epoch + timedelta(seconds=t))
            spec = (shape_of(job, self.policy) if self.by_shape else None) or job.spec
            ok = self._audited[key] = bool(place(spec, job.tenant, alone, self.policy, ctx).allowed)
            if self.by_shape and job.shape is not None:
                self._shapes[(job.tenant, id(job.shape), offer.key, offer.count)] = (job.shape, ok)
        return ok
