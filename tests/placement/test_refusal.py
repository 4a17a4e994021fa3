"""What a refused job is told first: the rules that reject the offers its hardware fits, or its
misfit where it fits none. Placement stops at an offer's first failing rule and the export rule
runs before the hardware fit, so a 64-GPU H100 job was told first of the licence its tenant lacks
for the 1-GPU H100 instances, as if a licence would have let it run."""

from __future__ import annotations

from pathlib import Path

from broker.burst import BurstInputs, decide
from broker.decision import Action
from broker.policy import load_policy
from broker.policy.offers import static_offers
from tests.burst.test_decision import NOW, job

ROOT = Path(__file__).resolve().parents[2]


def _reasons(count: int) -> tuple[str, ...]:
    policy = load_policy(ROOT / "configs" / "policy-sim.yaml")
    d = decide(
        job(("H100",), count=count),
        "pku-nlp",  # a D:5 tenant: the export rule rejects US-operated H100 instances
        static_offers(policy, read_at=NOW),
        policy,
        BurstInputs(now=NOW, queued_since=NOW),
    )
    assert d.action == Action.REJECT
    return d.reasons


def test_a_job_no_offer_carries_is_told_so_first() -> None:
    reasons = _reasons(64)
    assert reasons[0].startswith("hardware.fit: "), reasons
    assert "needs 64" in reasons[0], reasons


def test_a_job_the_export_rule_refuses_is_told_that_first() -> None:
    reasons = _reasons(1)
    assert reasons[0].startswith("us-export-3a090: "), reasons
