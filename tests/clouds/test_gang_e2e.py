"""Gang jobs on two clouds through the real broker (issue 14): a 2-node gang in one EC2 cluster
placement group (moto behind the fault front) and in one ECS deployment set (the ECS double),
reached by the real SDKs. Each node's bootstrap is played over the agent HTTP endpoint with
its rank and the attempt's secret from its UserData, as the real script reports.
"""

from __future__ import annotations

import base64
import json
import shlex
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from botocore.parsers import ResponseParserError
from google.protobuf import duration_pb2

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from broker.model import Attempt, JobId
from broker.store import SqliteStore
from tests.brokerproc import BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import Regions, StartBroker
from tests.clouds.e2e_helpers import TERMINAL, TOKEN, agent_secret_of, events, md, wait_state
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint, EcsFault
from tests.doubles.moto_front import AwsFault, MotoFront, capacity_fault
from tests.ports import lasting_port

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + on_moto.cloud_site("aws-west", "aws", "us-west-2", "aws-west.csv")
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY")
    + on_moto.cloud_site("ali-sh", "alibaba", "cn-shanghai", "ali-sh.csv", currency="CNY")
    + on_moto.sg_lab_tail("retries: {max_transient_retries: 2, backoff_initial: 0.05s, backoff_max: 0.1s}")
)



@dataclass
class World:
    broker: BrokerProcess
    moto: MotoFront
    bj: EcsCloud
    sh: EcsCloud


@pytest.fixture
def world(
    moto: MotoFront,
    ecs_server: EcsEndpoint,
    regions: Regions,
    start_broker: StartBroker,
) -> World:
    aws = on_moto.aws_on_moto(moto.url)
    setup = on_moto.BrokerSetup(
        POLICY,
        tokens={"sg-lab": TOKEN},
        sites={
            "aws-east": aws,
            "aws-west": aws,
            "ali-bj": on_moto.ecs_double(ecs_server.address),
            "ali-sh": on_moto.ecs_double(regions[2].address),
        },
        catalogs={
            "aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a"),
            "aws-west.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.10,,us-west-2,us-west-2a"),
            "ali-bj.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,13.90,,cn-beijing,cn-beijing-i"),
            "ali-sh.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,14.50,,cn-shanghai,cn-shanghai-b"),
        },
        extra=f"agent_http_listen: 127.0.0.1:{lasting_port()}",
    )
    return World(start_broker(setup), moto, regions[0], regions[1])


def gang(name: str, accel: str, nodes: int = 2) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=["torchrun", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        resources=job_pb2.Resources(
            accelerators=job_pb2.AcceleratorRequest(count=1, any_of=[accel]), nodes=nodes
        ),
    )


def submit(world: World, spec: job_pb2.JobSpec) -> tuple[broker_service_pb2_grpc.BrokerServiceStub, str]:
    stub = broker_service_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(world.broker.address))
    job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job
    return stub, job.id


def gang_of(world: World, job_id: str, site: str, timeout: float = 30) -> tuple[str, list[str]]:
    """(attempt id, instance ids in rank order) once the job's gang at `site` has launched."""
    deadline = time.monotonic() + timeout
    while True:
        store = SqliteStore(world.broker.config.parent / "data" / "broker.db")
        try:
            attempts = store.attempts_for(job_id)  # type: ignore[arg-type]
        finally:
            store.close()
        last = attempts[-1] if attempts else None
        if last is not None and last.site == site and (last.backend_id or "").startswith("gang:"):
            return last.id, (last.backend_id or "").rsplit(":", 1)[1].split(",")
        assert time.monotonic() < deadline, f"no gang launched at {site}: {last}"
        time.sleep(0.1)


def attempts_of(world: World, job_id: str) -> list[Attempt]:
    store = SqliteStore(world.broker.config.parent / "data" / "broker.db")
    try:
        return store.attempts_for(JobId(job_id))
    finally:
        store.close()


def ec2(moto: MotoFront, region: str) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=moto.url,
        region_name=region,
        aws_access_key_id="AKIDTESTTEST",
        aws_secret_access_key="secret",
    )


def ec2_live(moto: MotoFront, region: str, job_id: str) -> dict[str, dict[str, Any]]:
    """The job's EC2 instances that are not terminated (or shutting down), by id."""
    mine = [{"Name": "tag:szb:job", "Values": [job_id]}]
    for tries in range(1, 6):
        try:
            pages = ec2(moto, region).describe_instances(Filters=mine)
            break
        except ResponseParserError:  # moto's server fails a read now and then (an HTML 500) while
            if tries == 5:           # the broker changes instances: a race in moto, not the broker's
                raise
            time.sleep(0.2)
    return {
        i["InstanceId"]: i
        for r in pages["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    }


def ecs_live(cloud: EcsCloud, job_id: str) -> dict[str, dict[str, Any]]:
    return {
        iid: inst
        for iid, inst in cloud.instances.items()
        if {t["TagKey"]: t["TagValue"] for t in inst["Tags"]["Tag"]}.get("szb:job") == job_id
    }


def aws_user_data(moto: MotoFront, region: str, instance_id: str) -> str:
    attr = ec2(moto, region).describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


def var(script: str, name: str) -> str:
    """A `NAME=value` line's value in a UserData script."""
    for line in script.splitlines():
        if line.startswith(f"{name}="):
            return shlex.split(line.split("=", 1)[1])[0]
    raise AssertionError(f"{name} not set in the UserData")


def report_exit(script: str, attempt_id: str, exit_code: int, *, rank: bool = True) -> None:
    """What a node's bootstrap sends when its command ends: its rank, with the attempt's secret."""
    report = {
        "attempt_id": attempt_id,
        "kind": "exit",
        "exit_code": exit_code,
        "log_tail": f"rank {var(script, 'SZB_NODE_RANK')} done\n",
    }
    if rank:
        report["rank"] = int(var(script, "SZB_NODE_RANK"))
    body = json.dumps(report).encode()
    req = urllib.request.Request(
        var(script, "SZB_AGENT_ENDPOINT").rstrip("/") + "/v1/agent/report",
        data=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {agent_secret_of(script)}"},
    )
    urllib.request.urlopen(req, timeout=10).read()


def eventually(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_aws_gang_runs_in_one_placement_group_and_ends_when_every_rank_did(world: World) -> None:
    # EC2 refuses to delete a group whose instances are still shutting down: the first delete
    # fails, and the reconciler deletes the group on a later pass.
    in_use = AwsFault("DeletePlacementGroup", "InvalidPlacementGroup.InUse", 400, "in use", times=1)
    world.moto.scenario.faults = [in_use]
    stub, job_id = submit(world, gang("ddp", "A10G"))
    attempt_id, ids = gang_of(world, job_id, "aws-east")
    live = ec2_live(world.moto, "us-east-1", job_id)
    assert set(live) == set(ids) and len(ids) == 2
    groups = {world.moto.placement.group_of(i) for i in ids}
    assert len(groups) == 1 and None not in groups  # both nodes in one cluster placement group
    scripts = [aws_user_data(world.moto, "us-east-1", i) for i in ids]
    assert [var(s, "SZB_NODE_RANK") for s in scripts] == ["0", "1"]
    assert {var(s, "SZB_NNODES") for s in scripts} == {"2"}
    assert var(scripts[1], "SZB_MASTER_ADDR") == live[ids[0]]["PrivateIpAddress"]
    assert "WORLD_SIZE=$SZB_NNODES" in scripts[0] and "MASTER_PORT=${MASTER_PORT:-29500}" in scripts[0]
    wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING})
    # A node's exit without its rank would end the whole gang: refused, nothing changes.
    with pytest.raises(urllib.error.HTTPError) as refused:
        report_exit(scripts[1], attempt_id, 0, rank=False)
    assert refused.value.code == 400 and b"rank" in refused.value.read()
    report_exit(scripts[1], attempt_id, 0)
    time.sleep(0.5)
    job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job
    assert job.state == job_pb2.JOB_STATE_RUNNING  # rank 0 is still at work
    report_exit(scripts[0], attempt_id, 0)
    job = wait_state(stub, job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED and job.exit_code == 0
    eventually(lambda: not ec2_live(world.moto, "us-east-1", job_id), "gang instances left running")
    eventually(lambda: not world.moto.placement.groups, "placement group left behind")
    kinds = [e.kind for e in events(stub, job_id)]
    assert kinds.count("rank_exit") == 2
    assert in_use.times == 0 and world.moto.scenario.count("DeletePlacementGroup") >= 2


def test_aws_partial_launch_leaves_nothing_and_fails_over_as_a_whole(world: World) -> None:
    # The gang's 2nd RunInstances in us-east-1 finds no capacity (EC2's InsufficientInstanceCapacity).
    world.moto.scenario.faults = [capacity_fault("g5.xlarge", region="us-east-1", after=1, times=1)]
    stub, job_id = submit(world, gang("ddp", "A10G"))
    attempt_id, ids = gang_of(world, job_id, "aws-west")
    assert ec2_live(world.moto, "us-east-1", job_id) == {}  # rank 0 there was rolled back
    assert world.moto.scenario.count("RunInstances") == 4  # 2 in the east (1 refused), 2 in the west
    assert {r for r, _ in world.moto.placement.groups} == {"us-west-2"}  # the east's group deleted
    assert set(ec2_live(world.moto, "us-west-2", job_id)) == set(ids)
    # A rank failing fails the job at once and ends every node.
    report_exit(aws_user_data(world.moto, "us-west-2", ids[1]), attempt_id, 3)
    job = wait_state(stub, job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_FAILED and job.exit_code == 3
    eventually(lambda: not ec2_live(world.moto, "us-west-2", job_id), "gang instances left running")
    eventually(lambda: not world.moto.placement.groups, "placement group left behind")


def test_ecs_partial_launch_fails_over_then_the_gang_runs_in_one_deployment_set(world: World) -> None:
    world.bj.faults = [EcsFault("RunInstances", "OperationDenied.NoStock", 403, after=1, times=1)]
    # The set still holds the released instances at the first delete: the reconciler retries.
    world.sh.faults = [EcsFault("DeleteDeploymentSet", "DependencyViolation.NotEmpty", 403, times=1)]
    stub, job_id = submit(world, gang("ddp", "A10"))
    attempt_id, ids = gang_of(world, job_id, "ali-sh")
    assert ecs_live(world.bj, job_id) == {} and world.bj.deployment_sets == {}
    live = ecs_live(world.sh, job_id)
    assert set(live) == set(ids)
    [ds] = world.sh.deployment_sets
    assert world.sh.deployment_sets[ds]["DeploymentStrategy"] == "LowLatency"
    assert {inst["DeploymentSetId"] for inst in live.values()} == {ds}
    scripts = [base64.b64decode(world.sh.user_data[i]).decode() for i in ids]
    assert (
        var(scripts[1], "SZB_MASTER_ADDR")
        == live[ids[0]]["VpcAttributes"]["PrivateIpAddress"]["IpAddress"][0]
    )
    report_exit(scripts[0], attempt_id, 0)
    time.sleep(0.5)
    assert stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job.state not in TERMINAL
    report_exit(scripts[1], attempt_id, 0)
    job = wait_state(stub, job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    eventually(lambda: not ecs_live(world.sh, job_id), "gang instances left running")
    eventually(lambda: not world.sh.deployment_sets, "deployment set left behind")
    assert world.sh.faults[0].times == 0  # the first delete was refused; the reconciler's went through


def test_ecs_rank_failure_fails_the_job_and_ends_every_node(world: World) -> None:
    stub, job_id = submit(world, gang("ddp", "A10", nodes=3))
    attempt_id, ids = gang_of(world, job_id, "ali-bj")
    assert len(ecs_live(world.bj, job_id)) == 3
    report_exit(base64.b64decode(world.bj.user_data[ids[0]]).decode(), attempt_id, 137)
    job = wait_state(stub, job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_FAILED and job.exit_code == 137
    assert job.message == "exit code 137 (rank 0 of 3)"
    eventually(lambda: not ecs_live(world.bj, job_id), "gang instances left running")
    eventually(lambda: not world.bj.deployment_sets, "deployment set left behind")


def rank_exits(world: World, job_id: str) -> int:
    store = SqliteStore(world.broker.config.parent / "data" / "broker.db")
    try:
        return sum(e.kind == "rank_exit" for e in store.events_after(job_id, 0))  # type: ignore[arg-type]
    finally:
        store.close()


def test_gang_ranks_report_over_grpc_with_their_rank(world: World) -> None:
    # The gRPC agent service carries the rank too: a report without it, or out of range, is refused
    # with the field named and changes nothing; each rank's report counts once.
    stub, job_id = submit(world, gang("ddp", "A10"))
    attempt_id, ids = gang_of(world, job_id, "ali-bj")
    secret = agent_secret_of(base64.b64decode(world.bj.user_data[ids[0]]).decode())
    with grpc.insecure_channel(world.broker.address) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)

        def exit_report(**rank: int) -> None:
            req = agent_service_pb2.ReportExitRequest(
                attempt_id=attempt_id, token=secret, exit_code=0, **rank
            )
            agent.ReportExit(req)

        for bad in ({}, {"rank": 2}, {"rank": -1}):
            with pytest.raises(grpc.RpcError) as refused:
                exit_report(**bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "rank" in (refused.value.details() or "")
        assert rank_exits(world, job_id) == 0
        exit_report(rank=1)
        exit_report(rank=1)  # a retried report is kept once
        assert rank_exits(world, job_id) == 1
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job
        assert job.state not in TERMINAL  # rank 0 is still at work
        exit_report(rank=0)
    job = wait_state(stub, job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert [e.kind for e in events(stub, job_id)].count("rank_exit") == 2
    eventually(lambda: not ecs_live(world.bj, job_id), "gang instances left running")


def test_broker_killed_mid_gang_launch_adopts_what_started_and_leaks_nothing(world: World) -> None:
    # Rank 0's RunInstances reaches EC2 but the broker dies before it hears the answer.
    world.moto.scenario.delay_after = {"RunInstances": 5.0}
    stub, job_id = submit(world, gang("ddp", "A10G"))
    eventually(lambda: len(ec2_live(world.moto, "us-east-1", job_id)) == 1, "rank 0 never started")
    world.broker.kill()
    world.moto.scenario.delay_after = {}
    world.broker.restart()
    stub = broker_service_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(world.broker.address))
    attempt_id, ids = gang_of(world, job_id, "aws-east")
    assert (
        set(ec2_live(world.moto, "us-east-1", job_id)) == set(ids) and len(ids) == 2
    )  # adopted, not doubled
    assert len(world.moto.placement.groups) == 1
    for node in ids:  # both nodes report with the secret they were started with
        report_exit(aws_user_data(world.moto, "us-east-1", node), attempt_id, 0)
    assert wait_state(stub, job_id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
    eventually(lambda: not ec2_live(world.moto, "us-east-1", job_id), "gang instances left running")
    eventually(lambda: not world.moto.placement.groups, "placement group left behind")


def test_aws_gang_cancelled_mid_launch_starts_no_further_rank(world: World) -> None:
    # Rank 0's RunInstances reaches EC2, and its answer waits until the job is cancelled.
    gate = threading.Event()
    world.moto.scenario.hold_after = {"RunInstances": gate}
    try:
        stub, job_id = submit(world, gang("ddp", "A10G", nodes=3))
        eventually(lambda: len(ec2_live(world.moto, "us-east-1", job_id)) == 1, "rank 0 never started")
        cancelled = stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md()).job
        assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    finally:
        gate.set()
    eventually(lambda: attempts_of(world, job_id)[-1].state.terminal, "the attempt never ended")
    # The launch stopped before rank 1 and rolled back rank 0 and the group.
    assert world.moto.scenario.count("RunInstances") == 1
    eventually(lambda: not ec2_live(world.moto, "us-east-1", job_id), "gang instances left running")
    eventually(lambda: not world.moto.placement.groups, "placement group left behind")
    [attempt] = attempts_of(world, job_id)
    assert attempt.state.value == "CANCELLED"
    assert stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job.state == job_pb2.JOB_STATE_CANCELLED


def test_explain_says_a_job_is_a_gang_and_that_its_score_prices_every_node(
    world: World, tmp_path: Path
) -> None:
    # The table showed a 2-node gang as a one-node job with a doubled score and nothing else:
    # its price per hour and accelerators are per node, which it never said.
    files = {}
    for nodes in (1, 2):
        files[nodes] = tmp_path / f"n{nodes}.yaml"
        files[nodes].write_text(
            "name: ddp\ncommand: [torchrun, train.py]\nruntime_estimate: 1h\n"
            f"resources: {{nodes: {nodes}, accelerators: {{count: 1, any_of: [A10G]}}}}\n"
        )
    two = szb(world.broker, TOKEN, "explain", str(files[2]))
    assert two.returncode == 0, two.stderr
    assert "A 2-node gang, all-or-nothing on one site: PRICE/H and ACCELERATORS are per node" in two.stdout
    one = szb(world.broker, TOKEN, "explain", str(files[1]))
    assert "gang" not in one.stdout
    scores = [
        json.loads(szb(world.broker, TOKEN, "explain", "-o", "json", str(files[n])).stdout)
        for n in (1, 2)
    ]
    assert scores[1]["nodes"] == 2 and "nodes" not in scores[0]
    assert scores[1]["chosen"]["score"] == pytest.approx(2 * scores[0]["chosen"]["score"], rel=1e-3)


def test_broker_killed_while_rolling_a_gang_back_relaunches_it_whole_and_leaks_nothing(
    world: World,
) -> None:
    # The 2nd node finds no capacity; the broker dies while terminating rank 0 (tagged
    # cancelled, its TerminateInstances held). The resumed launch adopted that ended node and
    # started rank 1 beside it, and the job ended CANCELLED ("cancelled at the backend") though
    # no one cancelled it. The resumed launch now refuses an ended node: the gang relaunches whole.
    gate = threading.Event()
    world.moto.scenario.faults = [capacity_fault("g5.xlarge", region="us-east-1", after=1, times=1)]
    world.moto.scenario.hold_before = {"TerminateInstances": gate}
    stub, job_id = submit(world, gang("ddp", "A10G"))
    # Calls are counted before they wait at the gate: the termination is in flight.
    eventually(lambda: world.moto.scenario.count("TerminateInstances") >= 1, "no rollback began")
    world.broker.kill()
    world.moto.scenario.hold_before = {}
    gate.set()
    world.broker.restart()
    stub = broker_service_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(world.broker.address))
    eventually(lambda: len(attempts_of(world, job_id)) >= 2, "the gang was not launched again")
    attempt_id, ids = gang_of(world, job_id, "aws-east")
    first = attempts_of(world, job_id)[0]
    assert first.state.value == "FAILED" and first.backend_id is None
    wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING})
    assert set(ec2_live(world.moto, "us-east-1", job_id)) == set(ids) and len(ids) == 2
    for node in ids:
        report_exit(aws_user_data(world.moto, "us-east-1", node), attempt_id, 0)
    assert wait_state(stub, job_id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
    eventually(lambda: not ec2_live(world.moto, "us-east-1", job_id), "gang instances left running")
    eventually(lambda: not world.moto.placement.groups, "placement group left behind")
