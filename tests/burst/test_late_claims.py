"""Premium-aware choice of which job bursts (issue 15, obs. 2): a job that could start on-prem
now yields the capacity to a late job waiting to burst from that partition when the late job's
burst would cost more than its own, as the clairvoyant offline schedule bursts the cheapest
premiums. Pure decisions on hand-made inputs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker.burst import BurstInputs, decide
from broker.burst.claims import LateClaims, claim_premium
from broker.decision import Action
from broker.model import TenantId
from broker.policy import Policy
from broker.policy.offers import static_offers
from tests.burst.test_decision import NOW, job

PART = "onprem/a800"


def inputs(
    free: int, claims: dict[str, tuple[int, float]], waited_min: float = 0, **kw: object
) -> BurstInputs:
    return BurstInputs(
        now=NOW,
        queued_since=NOW - timedelta(minutes=waited_min),
        onprem_capacity={PART: (free, 0.0)},
        projected_wait={PART: 0.0},
        late_claims={PART: claims} if claims else {},
        **kw,  # type: ignore[arg-type]
    )


LATE_WAIT_S = 4 * 3600.0


def premium_of(policy: Policy, **spec: object) -> float:
    """The job's premium were it to start now: read off the late decision it makes when its
    start is projected 4 h away (a late claim prices the on-prem side at its projected start,
    so the 4 h of waiting at wait_hour_cost are added back)."""
    late = BurstInputs(
        now=NOW,
        queued_since=NOW,
        onprem_capacity={PART: (0, 0.0)},
        projected_wait={PART: LATE_WAIT_S},
    )
    d = decide(job(**spec), TenantId("lab"), static_offers(policy, read_at=NOW), policy, late)  # type: ignore[arg-type]
    assert d.action == Action.WAIT and d.facts.burst_in_s is not None  # committed to burst later
    got = claim_premium(d.facts, policy)
    assert got is not None
    return got + LATE_WAIT_S / 3600 * policy.objective.wait_hour_cost


@pytest.mark.parametrize("runtime", ["10m", "10h"])
def test_a_job_yields_free_capacity_to_a_late_job_whose_burst_costs_more(
    policy: Policy, runtime: str
) -> None:
    # One A800 free. The job could take it; a late job waiting behind it, set to burst, needs it.
    # Its premium (cloud total minus on-prem cost, read off the decision the same job makes when
    # it is late itself) decides: the late job's burst would cost more -> the job leaves the GPU
    # to it and waits (it may still find capacity, or burst itself); less -> it starts now.
    offers = static_offers(policy, read_at=NOW)
    mine = premium_of(policy, runtime=runtime, max_wait="30m")
    spec = job(runtime=runtime, max_wait="30m")
    d = decide(spec, TenantId("lab"), offers, policy, inputs(1, {"k": (1, mine + 0.5)}))
    assert d.action == Action.WAIT and not d.burst and d.offer is not None and d.offer.partition == PART
    assert d.reasons[0].startswith("yielding onprem/a800 to a late job")
    assert d.facts.onprem_partition == PART  # explain and the live projection note read it
    assert d.facts.onprem_expected_wait_s == 0 and d.facts.onprem_site == "onprem"
    d = decide(spec, TenantId("lab"), offers, policy, inputs(1, {"k": (1, mine - 0.5)}))
    assert d.action == Action.RUN and d.offer is not None and d.offer.partition == PART


@pytest.mark.parametrize(
    ("free", "claim_units", "why"),
    [
        (2, 1, "both fit: the late job starts on what this one leaves"),
        (1, 2, "the late job does not fit what frees"),
    ],
)
def test_no_yield_where_it_would_not_start_the_late_job(
    policy: Policy, free: int, claim_units: int, why: str
) -> None:
    d = decide(
        job(runtime="10m", max_wait="30m"),
        TenantId("lab"),
        static_offers(policy, read_at=NOW),
        policy,
        inputs(free, {"k": (claim_units, 1e6)}),
    )
    assert d.action == Action.RUN, why


@pytest.mark.parametrize(
    ("waited_min", "firm"),
    [(26, False), (0, True)],  # 4 min left: under the 5-min provisioning p95; or a firm deadline
)
def test_no_yield_without_time_to_burst_or_under_a_firm_deadline(
    policy: Policy, waited_min: float, firm: bool
) -> None:
    d = decide(
        job(runtime="10m", max_wait="30m"),
        TenantId("lab"),
        static_offers(policy, read_at=NOW),
        policy,
        inputs(1, {"k": (1, 1e6)}, waited_min, firm_deadline=firm),
    )
    assert d.action == Action.RUN


def test_late_claims_keep_each_jobs_latest_claim_and_offer_what_is_yielded_to_the_dearest(
    policy: Policy,
) -> None:
    claims = LateClaims()
    claims.put("a", PART, 1, 10.0, "lab")
    claims.put("b", PART, 4, 50.0, "lab")
    claims.put("c", "onprem/other", 1, 99.0, "lab")
    assert claims.yielded_to(PART, 8) == ()  # nobody yielded there: nobody is offered anything
    spec = job(runtime="10m", max_wait="30m")
    seen = inputs(1, dict(claims.view()[PART]))
    d = decide(spec, TenantId("lab"), static_offers(policy, read_at=NOW), policy, seen)
    assert d.reasons[0].startswith("yielding")  # a's claim (1 unit, 10 CNY) is above its own
    claims.note(d, seen, 1)
    assert claims.yielded_to(PART, 1) == ("a",)  # b (4 units) does not fit the one that freed
    assert claims.yielded_to(PART, 1) == ()  # offered once per yield
    claims.put("a", None)  # it started (or burst): no claim any more
    assert claims.view() == {PART: {"b": (4, 50.0)}, "onprem/other": {"c": (1, 99.0)}}
    claims.put("b", "onprem/other", 4, 5.0, "lab")  # re-decided: the claim moves
    assert PART not in claims.view()


def test_a_tenant_does_not_yield_to_one_far_over_its_fair_share() -> None:
    # The same rule as firm deadlines (burst.firm_deadline_share_gap): fair share owes the small
    # tenant the capacity a tenant at least twice as far over its share would take.
    claims = LateClaims()
    claims.put("f", PART, 1, 10.0, "flood")
    claims.put("s", PART, 1, 10.0, "small")
    ratios = {"flood": 1.6, "small": 0.3}
    assert set(claims.view(ratios, "small", 2.0)[PART]) == {"s"}
    assert set(claims.view(ratios, "flood", 2.0)[PART]) == {"f", "s"}
    assert set(claims.view(ratios, "small", 0.0)[PART]) == {"f", "s"}  # 0 turns the rule off
