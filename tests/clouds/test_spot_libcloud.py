"""Checkpoint-aware spot (issue 15) on the libcloud adapter, through the real broker (`szb serve`):
libcloud's own EC2 driver against moto, the only cloud here whose libcloud driver can ask for spot
(`ex_spot`). The site's catalog sells g5.xlarge at 1.006 USD/h on demand and 0.302 USD/h on spot.
"""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Callable
from typing import Any

import boto3
import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests import job_events
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md
from tests.clouds.test_spot_alibaba import job_shell
from tests.doubles.moto_front import MotoFront
from tests.job_events import Events, has

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("lc-east", "libcloud", "us-east-1", "lc-east.csv", spot=True)
    + """\
tenants:
  - {id: lab, kind: partner, entity_country: SG}
burst:
  sites:
    lc-east: {spot_interruption_risk: 0.05, provisioning_p95: 60s}
  blocklist_ttl: {capacity: 2s}
  heartbeat_timeout: 1h
"""
    + on_moto.CN_RESIDENCY
)

G5 = "g5.xlarge,A10G,1,4,16,1.006,0.302,us-east-1,us-east-1a"
Stub = broker_service_pb2_grpc.BrokerServiceStub


def libcloud_on_moto(moto: MotoFront, extra: str = "") -> str:
    """broker.yaml settings of a libcloud site: libcloud's EC2 driver, pointed at moto."""
    return (
        "{driver: ec2, driver_args: [AKIDTESTTEST, secret], "
        f"driver_kwargs: {{region: us-east-1, host: 127.0.0.1, port: {moto.port}, secure: false}}, "
        f"image: {on_moto.AMI}, userdata_kwarg: ex_userdata, metadata_kwarg: ex_metadata{extra}}}"
    )


def start(moto: MotoFront, start_broker: StartBroker, extra: str = "") -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"lab": TOKEN},
            sites={"lc-east": libcloud_on_moto(moto, extra)},
            catalogs={"lc-east.csv": on_moto.catalog(G5)},
            dispatch="poll_interval_s: 0.2, reconcile_interval_s: 1.0",
        )
    )


def job(name: str, spot: job_pb2.SpotMode.ValueType) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=4 * 3600),
        max_wait=duration_pb2.Duration(seconds=0),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10G"])),
        spot=spot,
    )
    spec.checkpoint.interval.CopyFrom(duration_pb2.Duration(seconds=1800))
    return spec


def submit(broker: BrokerProcess, spec: job_pb2.JobSpec) -> tuple[Stub, str]:
    stub = broker_service_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(broker.address))
    return stub, stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job.id


def ec2(moto: MotoFront) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTESTTEST",
        aws_secret_access_key="secret",
    )


def instances(moto: MotoFront, job_id: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
    """The job's EC2 instances (any state, in launch order), once there are `count`."""
    deadline = time.monotonic() + timeout
    while True:
        pages = ec2(moto).describe_instances(Filters=[{"Name": "tag:szb:job", "Values": [job_id]}])
        found = [i for r in pages["Reservations"] for i in r["Instances"]]
        found.sort(key=lambda i: i["LaunchTime"])
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{job_id}: {len(found)} instances, not {count}"
        time.sleep(0.1)


def job_env(moto: MotoFront, instance_id: str) -> dict[str, str]:
    """The variables the instance's UserData exports to the job's command."""
    attr = ec2(moto).describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    script = base64.b64decode(attr["UserData"]["Value"]).decode()
    body = job_shell(script)
    out = {}
    for line in body.splitlines():
        if "; export " in line and "=" in line:
            name, value = line.strip().split("; export ", 1)[0].split("=", 1)
            out[name] = shlex.split(value)[0]
    return out


def message_with(stub: Stub, job_id: str, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        message = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job.message
        if text in message:
            return message
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def test_spot_required_on_a_driver_without_spot_is_refused_with_the_reason(
    moto: MotoFront, start_broker: StartBroker
) -> None:
    broker = start(moto, start_broker)
    stub, job_id = submit(broker, job("needs-spot", job_pb2.SPOT_MODE_REQUIRED))
    message = message_with(stub, job_id, "spot")
    assert "the job runs only on spot capacity" in message, message
    _, allowed = submit(broker, job("may-spot", job_pb2.SPOT_MODE_ALLOWED))
    [inst] = instances(moto, allowed)  # on demand, as it is priced
    assert inst.get("InstanceLifecycle") != "spot"
    assert not instances(moto, job_id, count=0, timeout=0)


def test_a_spot_decision_launches_spot_where_the_driver_can_and_an_interruption_requeues_it(
    moto: MotoFront, start_broker: StartBroker
) -> None:
    broker = start(moto, start_broker, ", spot_kwargs: {ex_spot: true}")
    stub, job_id = submit(broker, job("ckpt-spot", job_pb2.SPOT_MODE_REQUIRED))
    [first] = instances(moto, job_id)
    assert first.get("InstanceLifecycle") == "spot", first
    env = job_env(moto, first["InstanceId"])
    assert env["SZB_CHECKPOINT_INTERVAL_S"] == "1800" and env["SZB_ATTEMPT_NUMBER"] == "1", env
    ec2(moto).terminate_instances(InstanceIds=[first["InstanceId"]])  # reclaimed by EC2
    second = instances(moto, job_id, count=2)[-1]  # the region's block (2 s here) ran out
    assert second.get("InstanceLifecycle") == "spot"
    assert job_env(moto, second["InstanceId"])["SZB_ATTEMPT_NUMBER"] == "2"
    kinds = [e.kind for e in events_so_far(stub, job_id, until=has("preempted"))]
    assert "preempted" in kinds and "lost" not in kinds, kinds
    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md())


def events_so_far(
    stub: Stub, job_id: str, until: Callable[[Events], bool] | None = None
) -> list[job_pb2.JobEvent]:
    return job_events.events_so_far(stub, job_id, md(), until)
