"""Issue 15 review (checkpoint-aware spot): what the restart limit must also cover: a job that
requires spot, and the reasons of a decision that passed a cheaper spot offer over."""

from __future__ import annotations

from broker.burst import decide
from broker.decision import Action
from broker.model import JobSpec, SpotMode, TenantId
from broker.policy import Policy
from tests.burst.test_decision import inputs, job, offers


def _long(spot: SpotMode) -> JobSpec:
    # ali-bj: A10 at 13.90 on-demand, 4.00 spot, 0.1 interruptions/h; on-prem has no A10. From
    # zero, 40 h at 0.1/h is ~530 billed hours and ~53 restarts, over the default limit of 3.
    return job(("A10",), runtime="40h", max_wait="5m").model_copy(update={"spot": spot})


def test_a_spot_required_job_over_the_restart_limit_is_not_put_on_spot(policy: Policy) -> None:
    d = decide(_long(SpotMode.REQUIRED), TenantId("lab"), offers(policy, free=0, wait_s=0), policy, inputs())
    assert not (d.offer is not None and d.offer.spot and d.action == Action.RUN), d.reasons
    assert any("restarts (limit" in r for r in d.reasons), d.reasons


def test_the_decision_says_why_a_cheaper_spot_offer_was_passed_over(policy: Policy) -> None:
    d = decide(_long(SpotMode.ALLOWED), TenantId("lab"), offers(policy, free=0, wait_s=0), policy, inputs())
    assert d.action == Action.RUN and d.offer is not None and not d.offer.spot  # on-demand: right
    assert any("spot expects" in r and "restarts (limit" in r for r in d.reasons), d.reasons
