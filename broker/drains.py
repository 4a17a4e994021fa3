"""Sites an operator took out of service (`szb drain SITE`): kept in the store, so a restart and
every process of a split deployment see the same drains, and audited (who, when, why).

A drained site gets no new placements; what already runs there runs to its end. Placement reads
the drains as an input (`PlacementContext.drained_sites`), as it reads site health.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from broker.auth import Principal
from broker.clock import Clock
from broker.model import SiteId
from broker.planning import Planner
from broker.policy import Policy
from broker.store import JobNotFoundError, JobStore, SiteDrain, StoreError
from broker.validation import BadRequestError, FieldViolation, did_you_mean

log = logging.getLogger(__name__)

MAX_REASON = 500
"""Characters of a drain's reason: a sentence for whoever waits on the site, not a document."""


def drain_words(drain: SiteDrain) -> str:
    """How placement and explain say it: `drained by alice: rack 4 maintenance`."""
    return f"drained by {drain.by}: {drain.reason}"


@dataclass(frozen=True)
class Drained:
    """A drain put in force: the drain, the one it replaced, and the jobs still running there."""

    drain: SiteDrain
    replaced: SiteDrain | None
    active_jobs: int


class SiteDrains:
    """The drains of one store: read fresh each time they are asked (a small table, one read per
    dispatch pass), the last good reading kept while the store does not answer."""

    def __init__(self, store: JobStore, clock: Clock, policy: Callable[[], Policy]) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self._last: list[SiteDrain] = []
        self._failing = False

    @classmethod
    def placing(cls, planner: Planner, store: JobStore, clock: Clock) -> SiteDrains:
        """The store's drains, read by `planner`'s placements from now on."""
        drains = cls(store, clock, lambda: planner.policy)
        planner.health.drained = drains.in_force
        return drains

    def current(self) -> list[SiteDrain]:
        """The drains in force, by site."""
        try:
            self._last = self.store.site_drains()
        except StoreError as exc:  # (a store outage must not lift a drain, nor stop a pass)
            if not self._failing:
                log.warning("drained sites: the store did not answer (%s); the last reading stays", exc)
            self._failing = True
            return self._last
        self._failing = False
        return self._last

    def in_force(self) -> dict[SiteId, str]:
        """Site -> who drained it and why, as placement reads it."""
        return {SiteId(d.site): drain_words(d) for d in self.current()}

    def drain(self, caller: Principal, site: str, reason: str) -> Drained:
        """Drain `site` of the policy in force (NOT_FOUND naming it otherwise), or give a drained
        site a new reason."""
        site = site.strip()
        self._known(site)
        reason = " ".join(reason.split())  # (one line: it is shown in tables and job reasons)
        if not reason:  # (as Slurm asks of a drain: whoever waits on the site is told it)
            raise BadRequestError([FieldViolation("reason", "say why the site is drained (and until when)")])
        if len(reason) > MAX_REASON:
            raise BadRequestError([FieldViolation("reason", f"at most {MAX_REASON} characters")])
        drain = SiteDrain(site=site, by=caller.who, reason=reason, since=self.clock.now())
        replaced = self.store.drain_site(drain)
        active = sum(n for (_, at, _), n in self.store.active_counts().items() if at == site)
        log.warning("site %s drained by %s: %s (%d jobs there run to their end)",
                    site, caller.who, reason, active,
                    extra={"event": "drained", "site": site, "by": caller.who, "reason": reason})
        return Drained(drain, replaced, active)

    def undrain(self, caller: Principal, site: str) -> SiteDrain | None:
        """Lift `site`'s drain (None: it was not drained). A site a reload removed from the policy
        may still be undrained, so its drain does not outlive it."""
        site = site.strip()
        lifted = self.store.undrain_site(site, caller.who, self.clock.now())
        if lifted is None:
            self._known(site)
        else:
            log.warning("site %s undrained by %s: it takes new placements", site, caller.who,
                        extra={"event": "undrained", "site": site, "by": caller.who})
        return lifted

    def _known(self, site: str) -> None:
        if not site:
            raise BadRequestError([FieldViolation("site", "name a site of the policy")])
        sites = [str(s.id) for s in self.policy().sites]
        if site not in sites:
            hint = did_you_mean(site, sites)
            raise JobNotFoundError(f"site {site!r} is not in the policy in force{hint}; its sites: "
                                   f"{', '.join(sorted(sites))}")
