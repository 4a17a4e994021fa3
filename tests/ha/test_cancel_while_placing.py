"""A job an API replica cancels while the active scheduler places it (issue 13 review).

In the embedded mode a cancel and a placement share one event loop, so nothing can land between
the placement's writes. A replica is another process: its cancel can commit between the
scheduler's `placed` write and its `attempt` write. The scheduler then met the illegal move
CANCELLED -> PROVISIONING: the whole dispatch pass failed (a traceback, the pass's other jobs
left undecided) and the attempt it had just created stayed open, counted as taken capacity,
until a sweep found it. Found with 900 jobs cancelled through a replica as they were placed
(a dozen passes failed); here a trigger in the real database makes that cancel land exactly
there, as the replica's would.
"""

from __future__ import annotations

import grpc
import psycopg

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptState
from tests.brokerproc import JOB_PYTHON
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import TERMINAL, spec, wait_for
from tests.ha.cloud import attempts, wait_until
from tests.ha.conftest import Cluster

CANCEL_ON_ATTEMPT = """
CREATE FUNCTION cancel_raced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE jobs SET state = 'CANCELLED' WHERE id = NEW.job_id AND client_id = 'raced';
  RETURN NEW;
END $$;
CREATE TRIGGER cancel_raced AFTER INSERT ON attempts FOR EACH ROW EXECUTE FUNCTION cancel_raced();
"""


def test_a_cancel_landing_between_placement_and_attempt_fails_no_pass_and_closes_the_attempt(
    cluster: Cluster,
) -> None:
    api = cluster.start("api")
    scheduler = cluster.start("scheduler")
    cluster.leader()
    with psycopg.connect(cluster.dsn, autocommit=True) as admin:
        admin.execute(CANCEL_ON_ATTEMPT)
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        reqs = [
            pb.SubmitJobRequest(job=spec("raced", [JOB_PYTHON, "-c", "pass"]), client_id="raced"),
            pb.SubmitJobRequest(job=spec("beside", [JOB_PYTHON, "-c", "pass"]), client_id="beside"),
        ]
        raced, beside = (
            r.job
            for r in stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=auth("team-a")).responses
        )
        assert wait_for(stub, beside.id, TERMINAL, timeout=60).state == job_pb2.JOB_STATE_SUCCEEDED
        assert wait_for(stub, raced.id, TERMINAL, timeout=10).state == job_pb2.JOB_STATE_CANCELLED
    # Closed by the placement itself, not left to the sweep (every 5 s) that stops ended jobs.
    wait_until(
        "the raced job's attempt is closed",
        lambda: attempts(cluster.dsn, raced.id)[0].state.terminal,
        timeout=3,
        shown=scheduler.text,
    )
    [attempt] = attempts(cluster.dsn, raced.id)
    assert attempt.state == AttemptState.CANCELLED and attempt.backend_id is None
    assert "before its launch" in attempt.error, attempt.error
    assert "dispatch pass failed" not in scheduler.text(), scheduler.text()[-6000:]
