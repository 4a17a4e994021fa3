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


def test_a_job_only_spot_over_the_limit_could_run_is_told_of_the_nearest_miss_first() -> None:
    """Held-out review: the refusal named the worst offer (9.1e+06 restarts on gn6i at 0.12/h)
    where the cheapest miss (g4dn at 0.05/h, 791 restarts) was the one worth knowing about."""
    from pathlib import Path

    from broker.burst.spot import spot_never
    from broker.model import Offer, SiteId
    from broker.policy import load_policy

    policy = load_policy(Path(__file__).resolve().parents[2] / "configs" / "policy.yaml")
    risky = Offer(site=SiteId("aliyun-cn-beijing"), instance_type="gn6i", accelerator="T4", count=1,
                  price_per_hour=3.0, spot=True)
    safer = Offer(site=SiteId("aws-us-east-1"), instance_type="g4dn.xlarge", accelerator="T4", count=1,
                  price_per_hour=2.0, spot=True)
    spec = job(("T4",), runtime="133h30m", max_wait="30m").model_copy(update={"spot": SpotMode.REQUIRED})
    said = spot_never(spec, [risky, safer], policy)
    assert len(said) == 2 and "g4dn.xlarge" in said[0] and "gn6i" in said[1], said
