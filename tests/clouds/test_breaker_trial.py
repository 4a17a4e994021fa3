"""A provider's circuit breaker, once half-open, lets one trial launch through (issue 4: "auth/config
errors open a circuit breaker on the provider (half-open probe later)").

AWS on moto with revoked credentials is the cheapest site, the ECS double the fallback. The first
job's AuthFailure opens aws-east's breaker; after `burst.blocklist_ttl.unhealthy` it is half-open.
Three jobs then arrive while the trial RunInstances is held at moto: the other two must not go to
aws-east meanwhile (before, every job decided while half-open launched there, each a call with
the revoked key), and once the trial fails the breaker is open again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import stub_for
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront, Scenario
from tests.job_events import Events, events_until, has

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + on_moto.cloud_site("aliyun-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
    + on_moto.sg_lab_tail("blocklist_ttl: {unhealthy: 3s}")
)
PLACED = {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}


def gpu_job(name: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10G", "A10"])),
    )


def revoked_east(moto: MotoFront, ecs_server: EcsEndpoint, policy: str) -> on_moto.BrokerSetup:
    """aws-east on moto as the cheapest site, an A10 in Beijing on the ECS double as the fallback;
    `revoke` then revokes aws-east's key (every call an AuthFailure). Revoked before the start, the
    start's reconcile pass finds it and the site is out of service from the first."""
    ecs_server.handler = EcsCloud(instance_types=(on_moto.A10,), zones=("cn-beijing-i",))
    moto.scenario = Scenario()
    return on_moto.BrokerSetup(
        policy,
        tokens={"sg-lab": TOKEN},
        sites=on_moto.east_and_beijing(moto.url, ecs_server.address, access_key="AKIDREVOKED"),
        catalogs={
            "aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a"),
            "ali.csv": on_moto.catalog(
                "ecs.gn7i-c8g1.2xlarge,A10,1,8,30,13.90,,cn-beijing,cn-beijing-i,CNY", currency=True
            ),
        },
    )


def revoke(moto: MotoFront) -> None:
    """The key is revoked while the broker runs: the next launch there meets it."""
    moto.scenario.rejected_access_keys.add("AKIDREVOKED")


def submit(stub: broker_service_pb2_grpc.BrokerServiceStub, name: str) -> job_pb2.Job:
    return stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job(name)), metadata=md()).job


def site_of(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, timeout: float = 30) -> str:
    """Where the job's attempt went once it settled on a site (waits out a failover)."""
    deadline = time.monotonic() + timeout
    while True:
        job = wait_state(stub, job_id, PLACED, timeout=timeout)
        if job.site == "aliyun-bj" or time.monotonic() > deadline:
            return str(job.site)
        time.sleep(0.1)


def events_so_far(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    until: Callable[[Events], bool] | None = None,
) -> list[job_pb2.JobEvent]:
    """The job's events up to now (WatchJob follows a live job until it ends: read for a moment);
    given `until`, read until those events have arrived (a loaded broker may send them late)."""
    if until is not None:
        return events_until(stub, job_id, md(), until)
    got: list[job_pb2.JobEvent] = []
    try:
        for r in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=md(), timeout=2):
            got.append(r.event)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    return got


def east_launches(moto: MotoFront) -> int:
    calls = moto.scenario.calls
    return sum(1 for action, region, _ in calls if action == "RunInstances" and region == "us-east-1")


def test_a_half_open_breaker_lets_one_trial_launch_through(
    moto: MotoFront, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    proc = start_broker(revoked_east(moto, ecs_server, POLICY))
    # The start's reconcile pass (instances, then placement groups) must have read aws-east first:
    # on a loaded box it can run after serving began, and a revoked key there puts the site out of
    # service from the start, so the first job would never try it.
    start_pass_done = lambda: ("DescribePlacementGroups", "us-east-1") in [  # noqa: E731
        (action, region) for action, region, _ in moto.scenario.calls
    ]
    deadline = time.monotonic() + 30
    while not start_pass_done():
        assert time.monotonic() < deadline, "the start's reconcile pass never read aws-east"
        time.sleep(0.05)
    revoke(moto)
    with stub_for(proc.address) as stub:
        first = submit(stub, "opens")
        assert site_of(stub, first.id) == "aliyun-bj"
        history = events_so_far(stub, first.id, until=has("placed", "on aliyun-bj"))  # after every failure
        failed = [e.data["error"] for e in history if e.kind == "attempt_failed"]
        assert failed == ["AuthError"]
        assert east_launches(moto) == 1
        time.sleep(3.5)  # past blocklist_ttl.unhealthy: the breaker is half-open
        gate = threading.Event()
        moto.scenario.hold_before["RunInstances"] = gate  # the trial call waits at moto
        try:
            trial = submit(stub, "trial")
            deadline = time.monotonic() + 20
            while east_launches(moto) < 2:
                assert time.monotonic() < deadline, "no trial launch reached aws-east"
                time.sleep(0.05)
            later = [submit(stub, f"later-{i}") for i in (1, 2)]
            for job in later:  # decided while the trial is unanswered: the fallback, not aws-east
                assert site_of(stub, job.id, timeout=10) == "aliyun-bj"
            assert east_launches(moto) == 2
            status = stub.GetStatus(pb.GetStatusRequest(), metadata=md())
            assert '"unhealthy": {"aws-east"' in status.status_json  # (a tenant is not told why)
        finally:
            gate.set()
        # The trial's AuthFailure opens the breaker again; its job fails over like the first.
        assert site_of(stub, trial.id) == "aliyun-bj"
        after = submit(stub, "after")
        assert site_of(stub, after.id) == "aliyun-bj"
        assert east_launches(moto) == 2
        assert '"unhealthy": {"aws-east"' in stub.GetStatus(pb.GetStatusRequest(), metadata=md()).status_json


PROVIDER_TEXT = "not able to validate the provided access credentials"


def test_a_tenant_is_told_the_kind_of_trouble_never_the_providers_text(
    moto: MotoFront, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    # A provider-wide error opens a site's breaker; its text (account ids, IAM names, the
    # operator's business) is for operators. Tenants learn the kind of trouble in GetStatus, and
    # must not read the text in their job's reason, live explain or offers either.
    policy = POLICY.replace("blocklist_ttl: {unhealthy: 3s}", "blocklist_ttl: {unhealthy: 1h}")
    proc = start_broker(revoked_east(moto, ecs_server, policy))
    revoke(moto)
    with stub_for(proc.address) as stub:
        first = submit(stub, "opens")
        assert site_of(stub, first.id) == "aliyun-bj"
        assert east_launches(moto) == 1
        later = submit(stub, "later")
        assert site_of(stub, later.id) == "aliyun-bj"
        # (The first job's own failed attempt still says what its launch met.)
        seen = [
            str(stub.ExplainPlacement(pb.ExplainPlacementRequest(job=gpu_job("what-if")), metadata=md())),
            str(stub.ListOffers(pb.ListOffersRequest(), metadata=md())),
            str(stub.GetStatus(pb.GetStatusRequest(), metadata=md())),
            *(str(e) for e in events_so_far(stub, later.id)),
        ]
    assert any("circuit open" in text for text in seen), seen
    leaks = [text for text in seen if PROVIDER_TEXT in text]
    assert not leaks, leaks
