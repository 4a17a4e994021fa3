"""Review of 2874fac: a job's own deadline bounds its wait (its latest start, deadline - runtime).

When that latest start comes before max_wait runs out, the decision's reasons named max_wait
anyway: 'past the 5 min left of max_wait' for a job that could still wait a day by its max_wait,
and 'exceeds max_wait, but no cloud offer is usable' for a job with 23 h of max_wait left. The
reason must name what bounds the wait; with no deadline (or max_wait first) it still says max_wait."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker.burst import RouteState, decide
from broker.decision import Action, Decision
from broker.model import SiteId, TenantId
from broker.policy import Policy
from tests.burst.test_decision import NOW, inputs, job, offers

_DUE = NOW + timedelta(hours=2)  # 1 h of work: its latest start is NOW + 1 h


def _decide(policy: Policy, minutes: int, *, projected: bool, busy: bool = False, **spec: object) -> Decision:
    spec = {"max_wait": "1d", "runtime": "1h", "deadline": _DUE, **spec}
    extra: dict[str, object] = {"projected_wait": {"onprem/a800": 3 * 3600.0}} if projected else {}
    if busy:  # ali-bj, the only cloud with A10s, at its max_provisioning: no cloud offer is usable
        extra["routes"] = {SiteId("ali-bj"): RouteState(provisioning=2)}
    return decide(
        job(**spec),  # type: ignore[arg-type]
        TenantId("lab"),
        offers(policy, free=0, wait_s=0 if projected else 3 * 3600),
        policy,
        inputs(now=NOW + timedelta(minutes=minutes), queued_since=NOW, **extra),
    )


@pytest.mark.parametrize("projected", [True, False], ids=["projected", "fluid"])
def test_a_burst_bounded_by_the_deadline_names_the_deadline_not_max_wait(
    policy: Policy, projected: bool
) -> None:
    d = _decide(policy, 56, projected=projected)  # 4 min before its latest start; max_wait: 23 h left
    assert d.action == Action.RUN and d.burst, d.reasons
    assert "max_wait" not in d.reasons[0], d.reasons[0]
    assert "4 min left before its latest start" in d.reasons[0], d.reasons[0]


def test_no_usable_cloud_under_a_deadline_names_the_deadline_not_max_wait(policy: Policy) -> None:
    d = _decide(policy, 30, projected=True, busy=True)  # latest start in 30 min; max_wait: 23.5 h left
    assert d.action == Action.WAIT and "no cloud offer is usable" in d.reasons[0], d.reasons
    assert "max_wait" not in d.reasons[0], d.reasons[0]
    assert "latest start" in d.reasons[0], d.reasons[0]


def test_max_wait_first_still_names_max_wait(policy: Policy) -> None:
    d = _decide(policy, 56, projected=False, max_wait="1h")  # max_wait ends at 60 min, the latest start too
    assert "left of max_wait" in d.reasons[0], d.reasons
    d = _decide(policy, 6, projected=False, max_wait="10m")  # max_wait: 4 min left; latest start: 54
    assert d.action == Action.RUN and d.burst and "4 min left of max_wait" in d.reasons[0], d.reasons
    d = _decide(policy, 6, projected=False, max_wait="10m", deadline=None)
    assert "4 min left of max_wait" in d.reasons[0], d.reasons


@pytest.mark.parametrize("projected", [True, False], ids=["projected", "fluid"])
def test_a_job_past_its_latest_start_is_not_burst_to_miss_its_deadline(
    policy: Policy, projected: bool
) -> None:
    """No site can meet a deadline once its latest start has passed: the job is refused ('deadline
    ... can no longer be met'), and the dispatcher fails it. 2874fac counted it as out of wait
    instead, so it burst (and paid for) a cloud run that ends past its deadline; then it waited
    for the dispatcher to fail it, while capacity free now ran it as if it had no deadline."""
    for spec in ({"runtime": "3h"}, {"runtime": "1h", "deadline": NOW - timedelta(minutes=5)}):
        d = _decide(policy, 1, projected=projected, **spec)  # 1 d of max_wait; on-prem: 3 h
        assert not d.burst and d.action == Action.REJECT, (spec, d.reasons)
        assert "can no longer be met" in d.reasons[0], d.reasons


def test_a_job_past_its_latest_start_is_refused_on_free_capacity_too(policy: Policy) -> None:
    # A deadline of 2001 ran at once wherever capacity was free; only a waiting one was failed.
    d = decide(
        job(max_wait="1d", runtime="1h", deadline=NOW - timedelta(days=1)),
        TenantId("lab"),
        offers(policy, free=8, wait_s=0),
        policy,
        inputs(now=NOW, queued_since=NOW),
    )
    assert d.action == Action.REJECT and "can no longer be met" in d.reasons[0], d.reasons
    d = decide(  # an hour to spare: it runs
        job(max_wait="1d", runtime="1h", deadline=NOW + timedelta(hours=2)),
        TenantId("lab"),
        offers(policy, free=8, wait_s=0),
        policy,
        inputs(now=NOW, queued_since=NOW),
    )
    assert d.action == Action.RUN and not d.burst, d.reasons


def test_a_deadline_refusal_is_recorded_under_the_deadline_not_a_misfit(policy: Policy) -> None:
    """The audit and log said "[rules: hardware.fit]" for it: rules that rejected other offers."""
    from broker.dispatch.records import audit_data, deciding_rules

    d = decide(
        job(max_wait="1d", runtime="1h", deadline=NOW - timedelta(days=1)),
        TenantId("lab"),
        offers(policy, free=8, wait_s=0),
        policy,
        inputs(now=NOW, queued_since=NOW),
    )
    assert d.action == Action.REJECT and deciding_rules(d) == ["deadline"]
    assert audit_data(d)["rules"] == ["deadline"]


def test_a_wait_for_capacity_names_no_rule(policy: Policy) -> None:
    """A job waiting on-prem for capacity logged `rules: ["hardware.fit"]`: the rule that turned
    away other offers (the CPU and H100 ones), not why it waits (operability review)."""
    from broker.dispatch.records import audit_data, decision_fields

    d = _decide(policy, 1, projected=False, deadline=None)  # a busy partition, a day to wait
    assert d.action == Action.WAIT and d.explanation is not None and d.explanation.allowed, d.reasons
    assert any(not s.allowed for s in d.explanation.offers)  # other offers were refused by rules
    assert audit_data(d)["rules"] == []
    from broker.model import Job, JobId, JobState

    j = Job(id=JobId("j-1"), tenant=TenantId("lab"), spec=job(max_wait="1d"), state=JobState.QUEUED,
            created_at=NOW, updated_at=NOW)
    assert decision_fields(j, d, "waiting")["rules"] == []
