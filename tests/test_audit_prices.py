"""The audit trail and the burst log line label an offer's price with the offer's own currency.

Found by an operability review: a burst to a site priced in USD showed in `szb audit` as
`@ 1.006 CNY/h` (the policy's currency, which labels the decision's other money figures),
while explain and offers said 1.01 USD.
"""

from __future__ import annotations

from datetime import UTC, datetime

from broker.audit import event_to_proto
from broker.decision import Action, Decision
from broker.dispatch.records import audit_data
from broker.model import JobEvent, JobId, JobState, Offer, SiteId, TenantId
from broker.serde_decision import decision_data


def test_a_usd_price_is_audited_in_usd() -> None:
    offer = Offer(site=SiteId("aws-us-east-1"), instance_type="g5.xlarge", accelerator="A10G", count=1,
                  price_per_hour=1.006, currency="USD")
    decision = Decision(Action.RUN, offer, ("cheapest",), burst=True, policy_hash="abc")
    data = {**decision_data(decision), **audit_data(decision), "currency": "CNY"}
    event = JobEvent(job_id=JobId("j-1"), seq=2, time=datetime(2026, 12, 5, tzinfo=UTC), kind="placed",
                     state=JobState.QUEUED, message="placed on aws-us-east-1 (g5.xlarge) [burst]", data=data)
    shown = event_to_proto(TenantId("pku-nlp"), event)
    assert (shown.price_per_hour, shown.currency) == (1.006, "USD")
