"""Reconciliation without races or leaks, and a startup that never waits for every backend.

Issue 11, obs. 3 (stopped instances were never deleted), 4 (a never-started attempt held an
on-prem slot), 5 (a just-finished attempt was rewritten CANCELLED) and 6 (an unreachable
libcloud endpoint stopped startup). Each runs a real broker process against the doubles.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import grpc

from broker.api import agent_service_pb2, agent_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from broker.model import Attempt, AttemptState, JobId, JobSpec, JobState, Offer, Resources, SiteId, TenantId
from broker.store import Submission
from tests.clouds.e2e_helpers import agent_secret_of
from tests.crash.client import MD, TERMINAL, Stub, events, job_spec, submit, wait_state
from tests.crash.conftest import Broker, MakeBroker
from tests.crash.world import AMI
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront

ORPHAN_TAGS = {"szb:job": "j-gone", "szb:attempt": "j-gone-a1"}


def ec2(moto: MotoFront) -> Any:
    return boto3.client(
        "ec2", endpoint_url=moto.url, region_name="us-east-1",
        aws_access_key_id="AKIDCRASH", aws_secret_access_key="secret",
    )


def agent_secret(moto: MotoFront, instance_id: str) -> str:
    """The agent secret the broker gave the instance, read from its UserData."""
    attr = ec2(moto).describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return agent_secret_of(base64.b64decode(attr["UserData"]["Value"]).decode())


def ec2_state(moto: MotoFront, instance_id: str) -> str:
    reply = ec2(moto).describe_instances(InstanceIds=[instance_id])
    return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


def until(check: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def test_stopped_instances_carrying_our_tags_are_deleted(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud
) -> None:
    """Obs. 3: `Stopped` maps to a terminal state, but a stopped instance still exists."""
    broker = make_broker()
    store = broker.open_store()
    ours = {**ORPHAN_TAGS, "szb:broker": store.broker_id()}  # (made at its first use, kept)
    store.close()
    client = ec2(moto)
    tags = [{"Key": k, "Value": v} for k, v in {**ours, "szb:token": "tok-ec2"}.items()]
    made = client.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    ec2_id = made["Instances"][0]["InstanceId"]
    client.stop_instances(InstanceIds=[ec2_id])
    stranger = client.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge")
    client.stop_instances(InstanceIds=[stranger["Instances"][0]["InstanceId"]])
    ecs_id = "i-stoppedorphan0001"
    ecs_tags = {**ours, "szb:token": "tok-ecs"}
    ecs.instances[ecs_id] = {
        "InstanceId": ecs_id, "InstanceName": "szb-j-gone-a1", "InstanceType": "ecs.gn7i-c8g1.2xlarge",
        "Status": "Stopped", "ZoneId": "cn-beijing-i", "SpotStrategy": "NoSpot",
        "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in ecs_tags.items()]},
        "OperationLocks": {"LockReason": []},
    }
    broker.start()
    until(lambda: ecs_id not in ecs.instances, what="the stopped ECS orphan was never deleted")
    until(lambda: ec2_state(moto, ec2_id) in ("shutting-down", "terminated"),
          what="the stopped EC2 orphan was never terminated")
    assert ec2_state(moto, stranger["Instances"][0]["InstanceId"]) == "stopped", "a stranger was touched"


def test_an_attempt_that_never_reached_a_backend_is_closed_at_start(make_broker: MakeBroker) -> None:
    """Obs. 4: killed right after placement, the job was requeued but its attempt held the slot."""
    broker = make_broker()
    store = broker.open_store()
    now = datetime.now(UTC)
    spec = JobSpec(
        name="placed-then-killed", command=("true",), runtime_estimate=timedelta(minutes=5),
        resources=Resources(accelerators={"count": 1, "any_of": ("A800",)}),
    )
    [(job, _)] = store.submit(TenantId("crash-lab"), [Submission(spec=spec)], now)
    store.transition(job.id, JobState.PLACING, now, kind="placed", site="onprem")
    offer = Offer(site=SiteId("onprem"), instance_type="a800", accelerator="A800", count=1, price_per_hour=14)
    stale = store.create_attempt(job.id, SiteId("onprem"), offer, "tok-never-sent", now)
    store.close()
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        # The only A800 slot is free: the requeued job, then a new one, run at once.
        assert wait_state(stub, job.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
        nxt = submit(stub, job_spec("next-on-a800", "A800", ["true"]))
        assert wait_state(stub, nxt.id, TERMINAL, timeout=15).state == job_pb2.JOB_STATE_SUCCEEDED
    store = broker.open_store()
    try:
        closed = store.get_attempt(stale.id)
        assert closed.state == AttemptState.CANCELLED and closed.broker_side, closed
        assert [a.id for a in store.live_attempts()] == []
    finally:
        store.close()


def _is_listing(call: tuple[str, str, dict[str, str]]) -> bool:
    action, _, params = call
    return action == "DescribeInstances" and params.get("Filter.1.Name") == "tag:szb:broker" and (
        params.get("Filter.2.Name") == "instance-state-name"
    )


def test_an_attempt_finishing_while_the_reconciler_lists_is_never_rewritten(
    make_broker: MakeBroker, moto: MotoFront
) -> None:
    """Obs. 5: list instances, attempt finishes, read live attempts: it looked like an orphan."""
    broker = make_broker(reconcile_interval_s=0.5)
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        job = submit(stub, job_spec("finishes-mid-listing", "A10G", ["true"]))
        attempt = _backend_attempt(broker, job.id)
        assert attempt.backend_id is not None
        secret = agent_secret(moto, attempt.backend_id)
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        agent.Heartbeat(
            agent_service_pb2.HeartbeatRequest(attempt_id=attempt.id, token=secret, running=True)
        )
        wait_state(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
        # Hold every DescribeInstances answer back: the next listing is in flight for 2 s.
        seen = sum(1 for c in moto.scenario.calls if _is_listing(c))
        moto.scenario.delay_after["DescribeInstances"] = 2.0
        until(lambda: sum(1 for c in moto.scenario.calls if _is_listing(c)) > seen, what="no listing")
        agent.ReportExit(
            agent_service_pb2.ReportExitRequest(attempt_id=attempt.id, token=secret, exit_code=0)
        )
        assert wait_state(stub, job.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
        listed = sum(1 for c in moto.scenario.calls if _is_listing(c))
        until(lambda: sum(1 for c in moto.scenario.calls if _is_listing(c)) > listed + 1, timeout=30,
              what="the reconciler did not list again")
        moto.scenario.delay_after.clear()
        kinds = [e.kind for e in events(stub, job.id)]
    store = broker.open_store()
    try:
        assert store.get_attempt(attempt.id).state == AttemptState.SUCCEEDED
    finally:
        store.close()
    assert "orphan_terminated" not in kinds, kinds


def _backend_attempt(broker: Broker, job_id: str, timeout: float = 20) -> Attempt:
    store = broker.open_store()
    try:
        deadline = time.monotonic() + timeout
        while True:
            attempts = store.attempts_for(JobId(job_id))
            if attempts and attempts[-1].backend_id:
                return attempts[-1]
            assert time.monotonic() < deadline, "no backend id recorded"
            time.sleep(0.1)
    finally:
        store.close()


def test_broker_starts_while_a_libcloud_endpoint_is_down(
    make_broker: MakeBroker, moto: MotoFront, hangs_up: int
) -> None:
    """Obs. 6: `requests.exceptions.ConnectionError` escaped reconciliation and stopped startup.

    The endpoint hangs up on every request (a port merely closed could be taken meanwhile)."""
    broker = make_broker(lc_endpoint_port=hangs_up)
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        status = json.loads(stub.GetStatus(pb.GetStatusRequest(), metadata=MD).status_json)
        assert "lc-east" in status["unhealthy"], status  # (the reason is shown to operators only)
        job = submit(stub, job_spec("elsewhere", "A10G", ["true"]))
        wait_state(stub, job.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})


def test_a_job_left_preempted_by_a_kill_is_requeued_at_start(make_broker: MakeBroker) -> None:
    """Found by the chaos harness: PREEMPTED then QUEUED are two writes; a kill between them
    left the job PREEMPTED, which nothing ever picked up again."""
    broker = make_broker()
    store = broker.open_store()
    now = datetime.now(UTC)
    spec = JobSpec(
        name="preempted-then-killed", command=("true",), runtime_estimate=timedelta(minutes=5),
        resources=Resources(accelerators={"count": 1, "any_of": ("A800",)}),
    )
    [(job, _)] = store.submit(TenantId("crash-lab"), [Submission(spec=spec)], now)
    store.transition(job.id, JobState.PLACING, now, kind="placed", site="onprem")
    offer = Offer(site=SiteId("onprem"), instance_type="a800", accelerator="A800", count=1, price_per_hour=14)
    attempt = store.create_attempt(job.id, SiteId("onprem"), offer, "tok-preempted", now)
    store.transition(job.id, JobState.PROVISIONING, now, kind="attempt")
    store.update_attempt(attempt.id, now, state=AttemptState.PREEMPTED, error="reclaimed")
    store.transition(job.id, JobState.PREEMPTED, now, kind="preempted", message="reclaimed")
    store.close()
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        final = wait_state(Stub(channel), job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 2, final.message
