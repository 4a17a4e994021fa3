"""Issue 15 review of the live side (review9): a job behind work that runs past its expected end;
a job whose own `deadline` comes before its max_wait runs out.

Live, a running job past its estimate x its tenant's ratio is projected to end *now*
(`broker/dispatch/waits.py` clamps its end at the snapshot's time), so the job behind it gets a
projected wait of exactly 0 s for as long as the overrun lasts. The decision's "Can't Be Late"
safety net (`_queue_choice` in broker/burst/decision.py) only applies to a wait above 0, so that
job waits past its max_wait, pass after pass, with the reason "expected wait 0 min is within the
0 min the job may still wait" -- while a projected wait of 1 s makes it burst. And a job spec's
`deadline` bounds only spot (slack, expected completion) and the dispatcher's give-up ("deadline
... can no longer be met": FAILED), never the wait: with a 1 d max_wait the job waits 3 h
on-prem past the deadline it could have met in the cloud, then fails. Both were defects of
broker/burst/decision.py, fixed there (live, waits.py now also projects an overrunning job to run
on); the tests below pin the fix. And a gang on spot is interrupted whenever any node is."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from broker.burst import decide
from broker.decision import Action
from broker.model import JobSpec, TenantId
from broker.policy import Policy, load_policy
from broker.serde_decision import explain_json
from tests.burst.conftest import POLICY, write_policy
from tests.burst.test_decision import NOW, inputs, job, offers


def _past_max_wait(policy: Policy, projected_s: float) -> tuple[Action, bool, float | None, str]:
    d = decide(
        job(max_wait="10m"), TenantId("lab"), offers(policy, free=0, wait_s=0), policy,
        inputs(queued_since=NOW - timedelta(minutes=20), projected_wait={"onprem/a800": projected_s}),
    )
    return d.action, d.burst, d.facts.onprem_expected_wait_s, d.reasons[0]


def test_a_one_second_projection_past_max_wait_is_late(policy: Policy) -> None:
    """The baseline the next test is measured against: any wait that is not 0 counts as late."""
    action, burst, wait, reason = _past_max_wait(policy, 1.0)
    assert (action, burst) == (Action.RUN, True) and wait is not None and wait > 0, reason


def test_a_job_behind_an_overrunning_job_is_not_within_its_max_wait_forever(policy: Policy) -> None:
    # No on-prem capacity is free now (free=0), so a projected 0 s is a stale end, not a start now.
    action, burst, wait, reason = _past_max_wait(policy, 0.0)
    assert "within the 0 min" not in reason, reason
    assert wait is not None and wait > 0, reason
    assert (action, burst) == _past_max_wait(policy, 1.0)[:2], reason


def test_a_job_whose_deadline_comes_first_does_not_wait_past_its_latest_start(policy: Policy) -> None:
    # Due in 2 h, 1 h of work, may wait a day by max_wait; on-prem is projected to start it in 3 h.
    spec = job(max_wait="1d", runtime="1h", deadline=NOW + timedelta(hours=2))
    for minutes in (0, 55):  # at submission, and 5 min before its latest start (deadline - runtime)
        d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=0), policy,
                   inputs(now=NOW + timedelta(minutes=minutes), queued_since=NOW,
                          projected_wait={"onprem/a800": 3 * 3600.0}))
        assert "is within the" not in d.reasons[0], (minutes, d.reasons)
    assert d.action == Action.RUN and d.burst, d.reasons  # at its last responsible moment: burst


def test_a_gang_on_spot_is_interrupted_whenever_any_of_its_nodes_is(tmp_path: Path) -> None:
    """`gangs: {spot: true}` ("one loss kills all"): a gang of N nodes restarts when any node is
    reclaimed, so it is interrupted N times as often as one node. At 0.1/h, 5 h from zero: one
    node expects 0.65 restarts and may go on spot; 8 nodes expect ~54 (limit 3) and go on demand,
    and explain says why."""
    policy = load_policy(write_policy(tmp_path, POLICY + "gangs: {spot: true}\n"))
    picks = {}
    for nodes in (1, 8):
        spec = JobSpec.model_validate({
            "name": "gang", "command": ["true"], "runtime_estimate": "5h", "max_wait": "5m",
            "resources": {"nodes": nodes, "accelerators": {"count": 1, "any_of": ["A10"]}},
        })
        d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=0), policy, inputs())
        assert d.action == Action.RUN and d.offer is not None, d.reasons
        picks[nodes] = d.offer.spot
        if nodes == 8:
            spot = next(o for o in explain_json(d, spec, policy)["offers"] if o["spot"])
            assert spot["passed_over"].startswith("spot expects 53.6 restarts (limit 3"), spot
    assert picks == {1: True, 8: False}, picks


def test_a_wait_with_no_start_in_sight_is_not_shown_as_a_number(policy: Policy) -> None:
    # A drained partition, or a no-borrow quota smaller than the job: the projection is "never"
    # (NEVER_S, 1e9 s), which the reasons showed as "on-prem wait 16666667 min".
    from broker.burst.projection import NEVER_S

    d = decide(
        job(max_wait="10m"), TenantId("lab"), offers(policy, free=0, wait_s=0), policy,
        inputs(queued_since=NOW - timedelta(minutes=20), projected_wait={"onprem/a800": NEVER_S}),
    )
    assert d.action == Action.RUN and d.burst, d.reasons
    assert "16666667" not in d.reasons[0] and "55555" not in d.reasons[0], d.reasons
    assert "projected on-prem start in ∞ min" in d.reasons[0] and "< ∞ CNY for waiting" in d.reasons[0]
