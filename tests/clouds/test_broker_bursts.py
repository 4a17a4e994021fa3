"""Bursting end to end: a real broker process, real SDKs on the wire, the cloud doubles.

The test plays the bootstrap on each instance by calling AgentService with the agent secret
found in the instance's UserData, as the UserData script would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from broker.store import SqliteStore
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import (
    TERMINAL,
    TOKEN,
    UserDataFn,
    agent_secret_of,
    ecs_user_data,
    events,
    live_attempt,
    md,
    play_bootstrap,
    play_bootstrap_when_on,
    wait_state,
)
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import AwsFault, MotoFront, Scenario, capacity_fault, throttle_fault

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + on_moto.cloud_site("aws-west", "aws", "us-west-2", "aws-west.csv")
    + on_moto.cloud_site("aliyun-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
    + on_moto.cloud_site("lc-east", "libcloud", "us-east-1", "lc-east.csv")
    + on_moto.sg_lab_tail("retries: {max_transient_retries: 4, backoff_initial: 0.05s, backoff_max: 0.2s}")
)


def setup(moto_url: str, ecs_address: str, *, aws_key: str = "AKIDTESTTEST") -> on_moto.BrokerSetup:
    """Sites: the local A800, AWS on moto (two regions), the ECS double, libcloud's EC2 driver on moto."""
    aws = on_moto.aws_on_moto(moto_url, access_key=aws_key, heartbeat_s=1)
    port = moto_url.rsplit(":", 1)[1]
    lc = (
        f"{{driver: ec2, driver_args: [{aws_key}, secret], driver_kwargs: {{region: us-east-1, "
        f"host: 127.0.0.1, port: {port}, secure: false}}, image: {on_moto.AMI}, userdata_kwarg: ex_userdata, "
        "metadata_kwarg: ex_metadata}"
    )
    return on_moto.BrokerSetup(
        POLICY,
        tokens={"sg-lab": TOKEN},
        sites={"aws-east": aws, "aws-west": aws, "aliyun-bj": on_moto.ecs_double(ecs_address), "lc-east": lc},
        catalogs={
            "aws-east.csv": on_moto.catalog(
                "g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a",
                "g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1b",
            ),
            "aws-west.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.10,,us-west-2,us-west-2a"),
            "ali.csv": on_moto.catalog(
                "ecs.gn7i-c8g1.2xlarge,A10,1,8,30,13.90,,cn-beijing,cn-beijing-i,CNY", currency=True
            ),
            "lc-east.csv": on_moto.catalog("g4dn.xlarge,T4,1,4,16,0.526,,us-east-1,us-east-1a"),
        },
    )


@pytest.fixture
def clouds(moto: MotoFront, ecs_server: EcsEndpoint) -> Iterator[tuple[MotoFront, EcsCloud]]:
    cloud = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    yield moto, cloud
    ecs_server.handler = EcsCloud()


@pytest.fixture
def broker(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> BrokerProcess:
    return start_broker(setup(clouds[0].url, ecs_server.address))


def gpu_job(name: str, *accels: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=list(accels))),
    )


def user_data_of(clouds: tuple[MotoFront, EcsCloud]) -> UserDataFn:
    """UserData of an instance in moto (AWS and libcloud sites) or the ECS double."""
    moto, ecs = clouds
    from_ecs = ecs_user_data([ecs.user_data])

    def lookup(instance_id: str) -> str:
        if instance_id in ecs.user_data:
            return from_ecs(instance_id)
        for region in ("us-east-1", "us-west-2"):
            ec2 = boto3.client("ec2", endpoint_url=moto.url, region_name=region,
                               aws_access_key_id="AKIDTESTTEST", aws_secret_access_key="secret")
            try:
                attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
            except ec2.exceptions.ClientError:
                continue
            return base64.b64decode(attr["UserData"]["Value"]).decode()
        raise AssertionError(f"no UserData for {instance_id}")

    return lookup


def ec2_instances(moto: MotoFront, region: str, job_id: str | None = None) -> list[dict[str, object]]:
    ec2 = boto3.client(
        "ec2",
        endpoint_url=moto.url,
        region_name=region,
        aws_access_key_id="AKIDTESTTEST",
        aws_secret_access_key="secret",
    )
    filters = [{"Name": "tag:szb:job", "Values": [job_id]}] if job_id else []
    out = []
    for res in ec2.describe_instances(Filters=filters)["Reservations"]:
        out.extend(res["Instances"])
    return out  # type: ignore[return-value]


def test_agent_rejects_a_wrong_attempt_token(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            agent.ReportExit(
                agent_service_pb2.ReportExitRequest(attempt_id="j-x-a1", token="nope", exit_code=0)
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("accel", "site"), [("A10G", "aws-east"), ("A10", "aliyun-bj"), ("T4", "lc-east")])
def test_burst_runs_completes_and_terminates(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud], accel: str, site: str
) -> None:
    moto, ecs = clouds
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("burst", accel)), metadata=md()).job
        wait_state(stub, job.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
        play_bootstrap(broker, job.id, user_data_of(clouds))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == site
        assert final.exit_code == 0 and "epoch 3/3" in final.log_tail
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            kinds = [e.kind for e in events(stub, job.id)]
            if "terminated" in kinds:
                break
            time.sleep(0.2)
        assert "terminated" in kinds
    if site in ("aws-east", "lc-east"):
        states = [i["State"]["Name"] for i in ec2_instances(moto, "us-east-1", job.id)]  # type: ignore[index]
        assert states and all(s in ("shutting-down", "terminated") for s in states)
    else:
        assert ecs.instances == {}


@pytest.mark.parametrize(("accel", "site"), [("A10G", "aws-east"), ("A10", "aliyun-bj")])
def test_the_agent_secret_is_in_user_data_only_never_in_tags(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud], accel: str, site: str
) -> None:
    moto, ecs = clouds
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("secret", accel)), metadata=md()).job
        wait_state(stub, job.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
        deadline = time.monotonic() + 15
        while (backend := live_attempt(broker.config.parent / "data", job.id)[2]) is None:
            assert time.monotonic() < deadline, "no backend id recorded"
            time.sleep(0.1)
        secret = agent_secret_of(user_data_of(clouds)(backend))
        if site == "aws-east":
            [instance] = ec2_instances(moto, "us-east-1", job.id)
            tags = {t["Key"]: t["Value"] for t in instance["Tags"]}  # type: ignore[attr-defined]
        else:
            tags = {t["TagKey"]: t["TagValue"] for t in ecs.instances[backend]["Tags"]["Tag"]}
        store = SqliteStore(broker.config.parent / "data" / "broker.db")
        try:
            attempt = store.attempts_for(job.id)[-1]  # type: ignore[arg-type]
        finally:
            store.close()
        assert tags["szb:token"] == attempt.token != secret  # the token names, the secret stays out
        assert not any(secret in f"{k}={v}" for k, v in tags.items())
        assert attempt.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert all(secret not in str(e) for e in events_so_far(stub, job.id))
        play_bootstrap(broker, job.id, user_data_of(clouds))  # and it is what authenticates the agent
        assert wait_state(stub, job.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
    assert secret not in (broker.config.parent / "broker.log").read_text()


def test_no_stock_fails_over_zone_region_then_provider(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ecs = clouds
    moto.scenario = Scenario(
        faults=[
            capacity_fault("g5.xlarge", zone="us-east-1a"),
            capacity_fault("g5.xlarge", zone="us-east-1b"),
            capacity_fault("g5.xlarge", region="us-west-2"),
        ]
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("failover", "A10G", "A10")), metadata=md()).job
        play_bootstrap_when_on(stub, broker, job.id, "aliyun-bj", user_data_of(clouds))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "aliyun-bj"
        history = events(stub, job.id)
    failed = [e for e in history if e.kind == "attempt_failed"]
    offers = [e.data["offer"] for e in failed]
    assert offers == [
        "aws-east/us-east-1a/g5.xlarge/ondemand",
        "aws-east/us-east-1b/g5.xlarge/ondemand",
        "aws-west/us-west-2a/g5.xlarge/ondemand",
    ]
    assert all(e.data["code"] == "InsufficientInstanceCapacity" for e in failed)
    placed = [e.message for e in history if e.kind == "placed"]
    assert len(placed) == 4 and "aliyun-bj" in placed[-1]
    assert ec2_instances(moto, "us-east-1", job.id) == [] and ec2_instances(moto, "us-west-2", job.id) == []


def test_throttling_is_retried_then_succeeds(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    moto.scenario = Scenario(faults=[throttle_fault("RunInstances", times=2)])
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("throttled", "A10G")), metadata=md()).job
        play_bootstrap_when_on(stub, broker, job.id, "aws-east", user_data_of(clouds))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 1
    assert moto.scenario.count("RunInstances") == 3  # two throttled, one through
    assert len(ec2_instances(moto, "us-east-1", job.id)) == 1


def test_bad_credentials_mark_provider_unhealthy_and_place_elsewhere(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    moto, _ = clouds
    moto.scenario = Scenario(rejected_access_keys={"AKIDREVOKED"})
    proc = start_broker(setup(moto.url, ecs_server.address, aws_key="AKIDREVOKED"))
    with grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        # Revoked before the start: the start's reconcile pass found it, so the site is out of
        # service from the first job on (none wastes an attempt there to find out).
        def out_of_service() -> dict[str, str]:
            status = stub.GetStatus(pb.GetStatusRequest(), metadata=md())
            return dict(json.loads(status.status_json).get("unhealthy") or {})

        assert "aws-east" in out_of_service()  # (a tenant is told it is unavailable, not why)
        early = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("creds-0", "A10G", "A10")), metadata=md()).job
        play_bootstrap_when_on(stub, proc, early.id, "aliyun-bj", user_data_of(clouds))
        assert [e for e in events(stub, early.id) if e.kind == "attempt_failed"] == []
        moto.scenario.rejected_access_keys.clear()  # a fresh key: the next listing reaches it
        deadline = time.monotonic() + 120
        while "aws-east" in out_of_service():
            assert time.monotonic() < deadline, "aws-east stayed out of service with a good key"
            time.sleep(0.5)
        moto.scenario.rejected_access_keys.add("AKIDREVOKED")  # revoked while it runs: the breaker's
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("creds", "A10G", "A10")), metadata=md()).job
        play_bootstrap_when_on(stub, proc, job.id, "aliyun-bj", user_data_of(clouds))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "aliyun-bj"
        failed = [e for e in events(stub, job.id) if e.kind == "attempt_failed"]
        assert failed and failed[0].data["error"] == "AuthError"
        # The breaker is open: a second job goes straight to the healthy provider.
        second = stub.SubmitJob(
            pb.SubmitJobRequest(job=gpu_job("creds-2", "A10G", "A10")), metadata=md()
        ).job
        play_bootstrap_when_on(stub, proc, second.id, "aliyun-bj", user_data_of(clouds))
        assert [e for e in events(stub, second.id) if e.kind == "attempt_failed"] == []
        status = stub.GetStatus(pb.GetStatusRequest(), metadata=md())
        assert "aws-east" in status.status_json and "circuit open" in status.status_json


def test_kill_after_cloud_call_before_id_stored_adopts_exactly_one(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    # long enough that a loaded machine still kills the broker before the answer arrives
    moto.scenario = Scenario(delay_after={"RunInstances": 20.0})
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("crashy", "A10G")), metadata=md()).job
        deadline = time.monotonic() + 15
        while moto.scenario.count("RunInstances") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    time.sleep(0.5)  # moto has created the instance; its answer is still held back
    broker.kill()
    assert live_attempt(broker.config.parent / "data", job.id)[2] is None
    moto.scenario.delay_after.clear()
    broker.restart()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        play_bootstrap(broker, job.id, user_data_of(clouds))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    instances = ec2_instances(moto, "us-east-1", job.id)
    assert len(instances) == 1, instances
    assert live_attempt(broker.config.parent / "data", job.id)[2] == instances[0]["InstanceId"]


def test_orphan_tagged_instance_is_terminated(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    ec2 = boto3.client(
        "ec2",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTESTTEST",
        aws_secret_access_key="secret",
    )
    tags = [
        {"Key": "szb:broker", "Value": broker.broker_id()},
        {"Key": "szb:job", "Value": "j-gone"},
        {"Key": "szb:attempt", "Value": "j-gone-a1"},
        {"Key": "szb:token", "Value": "deadbeef"},
    ]
    orphan = ec2.run_instances(
        ImageId=on_moto.AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    stranger = ec2.run_instances(ImageId=on_moto.AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge")
    orphan_id = orphan["Instances"][0]["InstanceId"]
    stranger_id = stranger["Instances"][0]["InstanceId"]
    deadline = time.monotonic() + 20
    while True:
        states = {i["InstanceId"]: i["State"]["Name"] for i in ec2_instances(moto, "us-east-1")}  # type: ignore[index]
        if states[orphan_id] in ("shutting-down", "terminated"):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert states[stranger_id] == "running", "an instance without our tags was touched"


def test_unused_fault_type_is_importable() -> None:
    # AwsFault is part of the doubles' public surface used by other tests.
    assert AwsFault("RunInstances", "X").matches("RunInstances", "us-east-1", {})


def test_real_user_data_script_reports_to_the_broker(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud], tmp_path: Path
) -> None:
    """Run the very UserData the broker gave the instance; it reports over the HTTP agent endpoint."""
    import base64
    import os
    import subprocess

    moto, _ = clouds
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = gpu_job("userdata", "A10G")
        spec.command[:] = ["python3", "-c", "print('trained on the instance'); raise SystemExit(4)"]
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job
        wait_state(stub, job.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
        deadline = time.monotonic() + 15
        while not ec2_instances(moto, "us-east-1", job.id):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        instance = ec2_instances(moto, "us-east-1", job.id)[0]
        ec2 = boto3.client(
            "ec2",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDTESTTEST",
            aws_secret_access_key="secret",
        )
        attr = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")  # type: ignore[arg-type]
        script = base64.b64decode(attr["UserData"]["Value"]).decode()
        env = {**os.environ, "SZB_NO_POWEROFF": "1", "SZB_WORKDIR": str(tmp_path / "instance")}
        done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 4, done.stderr
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_FAILED and final.exit_code == 4
        assert "trained on the instance" in final.log_tail


def test_silent_instance_is_lost_terminated_and_the_job_retried(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    moto, _ = clouds
    base = setup(moto.url, ecs_server.address)
    silent = base.policy.replace("heartbeat_timeout: 1h", "heartbeat_timeout: 2s")
    proc = start_broker(replace(base, policy=silent))
    with grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("silent", "A10G")), metadata=md()).job
        # The first instance never reports: after 2 s without a heartbeat it is lost.
        deadline = time.monotonic() + 30
        while not any(e.kind == "lost" for e in events_so_far(stub, job.id)):
            assert time.monotonic() < deadline, "the silent attempt was never declared lost"
            time.sleep(0.2)
        play_bootstrap_when_on(stub, proc, job.id, "aws-east", user_data_of(clouds))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 2
    # Both instances are terminated (the broker does it in the background after each end).
    deadline = time.monotonic() + 15
    while True:
        instances = ec2_instances(moto, "us-east-1", job.id)
        states = sorted(i["State"]["Name"] for i in instances)  # type: ignore[index]
        if all(s in ("shutting-down", "terminated") for s in states):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert len(instances) == 2


def events_so_far(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> list[job_pb2.JobEvent]:
    out = []
    try:
        for resp in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=md(), timeout=0.5):
            out.append(resp.event)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    return out
