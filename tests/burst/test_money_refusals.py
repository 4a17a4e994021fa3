"""A job that waits for want of a usable cloud offer carries every offer's refusal
(`Decision.cloud_refusals`; its reasons show the first few), and `money_refused` tells a refusal
by the budget or the global cap, which money freed may lift, from a route's or the stock's."""

from __future__ import annotations

from broker.burst import TenantMoney, decide
from broker.burst.cloud import money_refused
from broker.decision import Action
from broker.model import SiteId, TenantId
from broker.policy import Policy
from tests.burst.test_decision import inputs, job
from tests.burst.test_route_refusal_reasons import BUSY, FAILING, _offers


def test_the_budget_refusing_the_open_route_is_told_from_the_busy_route(policy: Policy) -> None:
    spec = job(("A800", "A10", "A100"), max_wait="1m")
    busy = {SiteId("ali-bj"): BUSY}
    spent = TenantMoney(budget_left=0.0)
    d = decide(spec, TenantId("lab"), _offers(policy), policy, inputs(routes=busy, money=spent))
    assert d.action == Action.WAIT and not d.burst
    assert d.cloud_refusals == d.reasons[1:]
    assert [r.split(":")[0].split(" ")[0] for r in d.cloud_refusals] == ["ali-bj", "ali-bj", "budget"]
    assert money_refused(d.cloud_refusals)

    capped = TenantMoney(global_left=1.0)
    d = decide(spec, TenantId("lab"), _offers(policy), policy, inputs(routes=busy, money=capped))
    assert d.cloud_refusals[-1].startswith("global burst cap:") and money_refused(d.cloud_refusals)


def test_routes_alone_refusing_is_not_money(policy: Policy) -> None:
    spec = job(("A800", "A10", "A100"), max_wait="1m")
    every = {SiteId("ali-bj"): BUSY, SiteId("aws-east"): FAILING}
    d = decide(spec, TenantId("lab"), _offers(policy), policy, inputs(routes=every))
    assert d.action == Action.WAIT and len(d.cloud_refusals) == 3
    assert not money_refused(d.cloud_refusals)


def test_a_job_that_bursts_or_waits_by_choice_carries_no_refusals(policy: Policy) -> None:
    spec = job(("A800", "A10", "A100"), max_wait="1m")
    d = decide(spec, TenantId("lab"), _offers(policy), policy, inputs())
    assert d.burst and d.cloud_refusals == ()
    patient = job(("A800",), max_wait="10h")
    d = decide(patient, TenantId("lab"), _offers(policy), policy, inputs(money=TenantMoney(budget_left=0.0)))
    assert d.action == Action.WAIT and d.cloud_refusals == ()  # on time on-prem: the cloud was not asked
