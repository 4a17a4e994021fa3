"""The reasons a waiting job's decision gives when cloud routes refuse (issue 15 review): the burst
cloud pick passes over a refused route's offers for speed, yet a user still reads, for each offer
in the offers' own order, the first thing that stops it (its stock, its spot deadline, then the
route), exactly as when every offer was checked in turn."""

from __future__ import annotations

from datetime import timedelta

from broker.burst import RouteState, decide
from broker.decision import Action
from broker.model import Offer, SiteId, TenantId
from broker.policy import Policy
from tests.burst.test_decision import NOW, inputs, job, offers

ALI_OD = "ali-bj/cn-beijing-i/ecs.gn7i-c8g1.2xlarge/ondemand"
ALI_SPOT = "ali-bj/cn-beijing-i/ecs.gn7i-c8g1.2xlarge/spot"
AWS = "aws-east/us-east-1a/p4d.24xlarge/ondemand"
BUSY = RouteState(provisioning=2)  # ali-bj's max_provisioning is 2
FAILING = RouteState(recent_attempts=4, recent_failures=3, last_failure=NOW - timedelta(minutes=1))
WAIT_NOTE = "on-prem wait 300 min exceeds max_wait, but no cloud offer is usable"


def _offers(policy: Policy, *, no_stock: str | None = None) -> list[Offer]:
    """On-prem full (a 5 h wait); `no_stock`: the cloud offer with none left."""
    out = offers(policy, free=0, wait_s=5 * 3600)
    return [o.model_copy(update={"free": 0}) if o.key == no_stock else o for o in out]


def test_a_refused_route_still_names_each_offers_own_first_reason(policy: Policy) -> None:
    tight = job(("A800", "A10"), max_wait="1m", deadline=NOW + timedelta(hours=1, minutes=20))
    routes = {SiteId("ali-bj"): BUSY}
    d = decide(tight, TenantId("lab"), _offers(policy), policy, inputs(routes=routes))
    assert d.action == Action.WAIT and not d.burst
    assert d.reasons == (
        WAIT_NOTE,
        "ali-bj already has 2 instance(s) provisioning (limit 2)",
        f"{ALI_SPOT}: deadline too close for spot",
    )
    d = decide(tight, TenantId("lab"), _offers(policy, no_stock=ALI_OD), policy, inputs(routes=routes))
    assert d.reasons == (WAIT_NOTE, f"{ALI_OD}: no stock", f"{ALI_SPOT}: deadline too close for spot")


def test_every_route_refused_gives_every_offers_reason_in_the_offers_order(policy: Policy) -> None:
    spec = job(("A800", "A10", "A100"), max_wait="1m")
    routes = {SiteId("ali-bj"): BUSY, SiteId("aws-east"): FAILING}
    d = decide(spec, TenantId("lab"), _offers(policy), policy, inputs(routes=routes))
    busy = "ali-bj already has 2 instance(s) provisioning (limit 2)"
    throttled = "aws-east is throttled: 3 of its last 4 attempts failed (limit 50%)"
    assert d.action == Action.WAIT and not d.burst
    assert d.reasons == (WAIT_NOTE, busy, busy, throttled)


def test_a_dearer_cloud_behind_a_refused_cheaper_route_is_picked(policy: Policy) -> None:
    spec = job(("A800", "A10", "A100"), max_wait="1m")
    open_d = decide(spec, TenantId("lab"), _offers(policy), policy, inputs())
    assert open_d.offer is not None and open_d.offer.site == "ali-bj"  # cheaper while its route is open
    d = decide(spec, TenantId("lab"), _offers(policy), policy, inputs(routes={SiteId("ali-bj"): BUSY}))
    assert d.action == Action.RUN and d.burst and d.offer is not None and d.offer.key == AWS
    assert d.facts.cloud_offer == AWS
