"""The failure throttle counts a route's failures, not the ends its jobs caused themselves.

Found by a held-out review of issue 10: a job that powered its own instance off was LOST, and that
loss counted toward its route's failure throttle, so a few such jobs kept every tenant's bursts
off the route (`broker.model.JOB_SIDE`).
"""

from __future__ import annotations

from datetime import timedelta

from broker.burst import route_states
from broker.model import BROKER_SIDE, JOB_SIDE, AttemptState, SiteId
from broker.policy import Policy
from tests.burst.test_decision import NOW
from tests.burst.test_provisioning_learned import _attempt


def test_a_loss_its_own_job_caused_is_an_attempt_of_the_route_but_no_failure(policy: Policy) -> None:
    ended = NOW - timedelta(minutes=1)
    errors = [JOB_SIDE + "EC2 state stopped before the job reported: Client.InstanceInitiatedShutdown"] * 3
    errors += ["EC2 state terminated before the job reported: Server.InternalError", BROKER_SIDE + "lost"]
    attempts = [
        _attempt(n, "ali-bj", ended).model_copy(update={"state": AttemptState.LOST, "error": error})
        for n, error in enumerate(errors)
    ]
    state = route_states(attempts, NOW, policy)[SiteId("ali-bj")]
    assert (state.recent_attempts, state.recent_failures) == (4, 1)
