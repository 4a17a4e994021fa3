"""Each cloud route's launch times (and the last hour's bursts), read from the store's history at a
(re)start or failover.

A late job's lead is the larger of the policy's `provisioning_p95` and the p95 of the route's
newest launches (`broker.burst.provisioning`). Kept in memory only, a route's observed p95
started from nothing with every restart and with every HA failover's new scheduler, and the
policy's figure stood until the route had had 10 launches again. The store already holds each
attempt's creation and its job's move to RUNNING: the newest `WINDOW` per route are read back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from broker.burst import is_onprem
from broker.burst.provisioning import ProvisioningTimes
from broker.model import SiteId, TenantId
from broker.policy import Policy
from broker.store import JobStore, StoreError

log = logging.getLogger(__name__)


def read_launch_times(policy: Policy, store: JobStore) -> ProvisioningTimes:
    """The policy's cloud routes' newest launch times, as `Planner.launched` would have timed them."""
    times = ProvisioningTimes()
    for site in _clouds(policy):
        try:
            launches = store.launch_times(site, times.window)
        except StoreError as exc:  # the policy's figure stands until launches are timed anew
            log.warning("could not read %s's launch times from the store: %s", site, exc)
            continue
        for seconds in launches:
            times.observe(site, seconds)
    return times


def _clouds(policy: Policy) -> list[SiteId]:
    return [SiteId(site.id) for site in policy.sites if not is_onprem(policy, site.id)]


def read_recent_bursts(
    policy: Policy, store: JobStore, now: datetime, tenant: TenantId | None = None
) -> list[datetime]:
    """When each attempt started at a cloud site (of `tenant`'s jobs if given) was created within the hour
    before `now` (`szb status`'s bursts of the last hour, which a restart or a failover would
    otherwise start from none; a tenant's status counts its own)."""
    try:
        return store.attempt_times(_clouds(policy), now - timedelta(hours=1), tenant)
    except StoreError as exc:
        log.warning("could not read the last hour's bursts from the store: %s", exc)
        return []
