"""#13: `burst.decide` returns a typed, frozen decision; its JSON and wire form come from serde."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta

import pytest

from broker.api import placement_pb2
from broker.burst import decide
from broker.decision import Action, Decision, DecisionFacts, FairShareNote, ProjectionNote, ReclaimVictim
from broker.model import TenantId
from broker.policy import Policy
from broker.serde import decision_from_proto, explanation_from_proto, explanation_to_proto
from broker.serde_decision import decision_data, decision_proto, explain_json, facts_from_proto
from tests.burst.test_decision import NOW, inputs, job, offers


def _decisions(policy: Policy) -> list[Decision]:
    lab = TenantId("lab")
    full = offers(policy, free=0, wait_s=6 * 3600)
    return [
        decide(job(), lab, offers(policy, free=8, wait_s=0), policy, inputs()),  # run on-prem
        decide(job(max_wait="2h"), lab, full, policy, inputs(queued_since=NOW - timedelta(minutes=5))),
        decide(job(max_wait="5m"), lab, full, policy, inputs()),  # burst now
        decide(job(("NOPE",)), lab, full, policy, inputs()),  # reject
    ]


def test_the_decision_is_frozen_and_typed(policy: Policy) -> None:
    pending, burst = _decisions(policy)[1:3]
    assert pending.action == Action.WAIT
    assert isinstance(pending.facts.burst_pending_since, datetime)  # not an ISO string
    assert burst.burst and burst.facts.cash is not None and burst.facts.cloud_offer
    with pytest.raises(dataclasses.FrozenInstanceError):
        burst.facts.cash = 0.0  # type: ignore[misc]
    assert not any(isinstance(f.type, str) and "Mapping" in f.type for f in dataclasses.fields(Decision))


def test_facts_round_trip_through_the_wire(policy: Policy) -> None:
    for d in _decisions(policy):
        msg = decision_proto(d)
        # The chosen offer's score travels on the explanation's `chosen` offer, not on the Decision.
        assert facts_from_proto(msg) == dataclasses.replace(d.facts, score=None), d.reasons
        assert msg.burst == d.burst and tuple(msg.reasons) == d.reasons


def test_explain_json_survives_the_proto_and_json(policy: Policy) -> None:
    for d in _decisions(policy):
        body = explain_json(d)
        json.dumps(body)  # plain JSON: no datetimes, no dataclasses
        back = explanation_from_proto(explanation_to_proto(body))["decision"]
        for key in ("action", "burst", "reasons", "cash", "voucher", "burst_pending_since", "onprem_site",
                    "onprem_partition"):
            assert back.get(key) == body["decision"].get(key), key


def test_fair_share_and_reclaim_are_typed_and_recorded() -> None:
    d = Decision(
        Action.WAIT,
        facts=DecisionFacts(waited_s=60, currency="CNY"),
        fair_share=FairShareNote(3, True, 0.5, "tenant a at 0.50 of its share", tenant_position=1),
        reclaim=(ReclaimVictim("att-1", "b", 2),),
    )
    data = decision_data(d)
    assert data["fair_share"] == {
        "position": 3,
        "tenant_position": 1,
        "in_quota": True,
        "share_ratio": 0.5,
        "standing": "tenant a at 0.50 of its share",
    }
    assert data["reclaim"] == [{"attempt": "att-1", "tenant": "b", "units": 2}]
    assert data["waited_s"] == 60 and data["currency"] == "CNY" and data["action"] == "wait"


def test_a_projected_wait_and_a_late_burst_round_trip_through_the_wire() -> None:
    """The projection note and burst_in_s survive decision data -> proto bytes -> data and facts."""
    note = ProjectionNote(
        partition="onprem/a800",
        wait_s=5400.0,
        free_units=3,
        running=((8, 1800.0), (2, 3600.0)),
        running_jobs=7,
        backend_queue_jobs=2,
        ahead_jobs=4,
        ahead_units=12,
        ahead_unit_hours=9.5,
        runtime_ratio=1.75,
    )
    facts = DecisionFacts(
        waited_s=120, max_wait_s=3600, remaining_wait_s=3480, currency="CNY", onprem_site="onprem",
        onprem_partition="onprem/a800", onprem_expected_wait_s=5400.0, onprem_total_cost=60.0,
        cloud_offer="aws-east/p4d.24xlarge", cloud_total_cost=40.0, burst_in_s=3430.0,
    )
    d = Decision(Action.WAIT, facts=facts, projection=note, reasons=("late: bursting at the last moment",))
    wire = placement_pb2.Decision.FromString(decision_proto(d).SerializeToString())
    assert wire.burst_in_seconds == 3430.0 and wire.projection.partition == "onprem/a800"
    assert wire.onprem_partition == "onprem/a800"
    assert facts_from_proto(wire) == facts
    back = decision_from_proto(wire)
    assert back["projection"] == decision_data(d)["projection"] == {
        "partition": "onprem/a800",
        "wait_s": 5400.0,
        "free_units": 3,
        "running": [{"units": 8, "ends_in_s": 1800.0}, {"units": 2, "ends_in_s": 3600.0}],
        "running_jobs": 7,
        "backend_queue_jobs": 2,
        "queue_ahead_jobs": 4,
        "queue_ahead_units": 12,
        "queue_ahead_unit_hours": 9.5,
        "runtime_ratio": 1.75,
    }
    assert back["burst_in_s"] == 3430.0
    assert "projection" not in decision_from_proto(decision_proto(Decision(Action.WAIT, facts=facts)))
