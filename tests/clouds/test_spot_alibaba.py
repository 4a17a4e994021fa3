"""Checkpoint-aware spot (issue 15) on Alibaba, through the real broker (`szb serve`) and the ECS
double in two regions, reached by the real tea-openapi SDK.

Beijing sells the A10 on spot at 4 CNY/h, Shanghai at 5 CNY/h (on demand 13.90 and 14.50), both
with 0.05 interruptions/h. A 4 h job checkpointing every 30 min that requires spot goes to Beijing;
when ECS interrupts it (the instance locked for Recycling, then released, as ECS documents spot
reclaims) the job is requeued as attempt 2, Beijing is blocked for a while and the job comes back
on a Shanghai spot instance whose UserData tells it its attempt and checkpoint interval.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests import job_events
from tests.brokerproc import BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import Regions, StartBroker
from tests.clouds.e2e_helpers import (
    TERMINAL,
    TOKEN,
    ecs_user_data,
    events,
    md,
    play_bootstrap_when_on,
    wait_state,
)
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.job_events import Events, has

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY", spot=True)
    + on_moto.cloud_site("ali-sh", "alibaba", "cn-shanghai", "ali-sh.csv", currency="CNY", spot=True)
    + """\
tenants:
  - {id: lab, kind: partner, entity_country: SG}
burst:
  sites:
    ali-bj: {spot_interruption_risk: 0.05, provisioning_p95: 60s}
    ali-sh: {spot_interruption_risk: 0.05, provisioning_p95: 60s}
  blocklist_ttl: {capacity: 1h}
  heartbeat_timeout: 1h
gangs: {spot: true}
"""
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def broker(ecs_server: EcsEndpoint, regions: Regions, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(two_region_setup(POLICY, ecs_server, regions))


def two_region_setup(policy: str, ecs_server: EcsEndpoint, regions: Regions) -> on_moto.BrokerSetup:
    """`policy` over ali-bj (the ECS double's first region) and ali-sh (its second), A10 in each."""
    return on_moto.BrokerSetup(
        policy,
        tokens={"lab": TOKEN},
        sites={
            "ali-bj": on_moto.ecs_double(ecs_server.address),
            "ali-sh": on_moto.ecs_double(regions[2].address),
        },
        catalogs={
            "ali-bj.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,13.90,4.00,cn-beijing,cn-beijing-i"),
            "ali-sh.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,14.50,5.00,cn-shanghai,cn-shanghai-b"),
        },
        dispatch="poll_interval_s: 0.2",
    )


def spot_job(
    name: str,
    *,
    runtime_s: int = 4 * 3600,
    checkpoint_s: int | None = 1800,
    nodes: int = 1,
    spot: job_pb2.SpotMode.ValueType = job_pb2.SPOT_MODE_REQUIRED,
) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py", "--resume"],
        runtime_estimate=duration_pb2.Duration(seconds=runtime_s),
        max_wait=duration_pb2.Duration(seconds=0),
        resources=job_pb2.Resources(
            accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10"]), nodes=nodes
        ),
        spot=spot,
    )
    if checkpoint_s is not None:
        spec.checkpoint.interval.CopyFrom(duration_pb2.Duration(seconds=checkpoint_s))
    return spec


def job_shell(script: str) -> str:
    """The job's own shell script in a UserData (`SZB_JOB_SH`, run by `szb_run_job`)."""
    lex = shlex.shlex(script.split("\nSZB_JOB_SH=", 1)[1], posix=True)
    lex.whitespace_split = True
    return str(lex.get_token())


def job_env(cloud: EcsCloud, instance_id: str) -> dict[str, str]:
    """The variables the UserData exports to the job's command (`szb_run_job`)."""
    script = base64.b64decode(cloud.user_data[instance_id]).decode()
    body = job_shell(script)
    out = {}
    for line in body.splitlines():
        assignment = line.strip().split("; export ", 1)[0]
        if "=" in assignment and "; export " in line.strip():
            name, value = assignment.split("=", 1)
            out[name] = shlex.split(value)[0] if value else ""
    return out


def launched(cloud: EcsCloud, job_id: str, timeout: float = 20) -> list[str]:
    """The job's instances at `cloud` (in launch order), once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            iid
            for iid, inst in list(cloud.instances.items())
            if {t["TagKey"]: t["TagValue"] for t in inst["Tags"]["Tag"]}.get("szb:job") == job_id
        ]
        if found:
            return found
        assert time.monotonic() < deadline, f"{job_id} never launched at {cloud.zones}"
        time.sleep(0.1)


Stub = broker_service_pb2_grpc.BrokerServiceStub


def submit(broker: BrokerProcess, spec: job_pb2.JobSpec) -> tuple[Stub, str]:
    stub = broker_service_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(broker.address))
    return stub, stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job.id


@pytest.mark.parametrize("reclaim", ["notice", "released"])
def test_a_spot_interruption_requeues_as_attempt_2_in_the_other_region(
    broker: BrokerProcess, regions: Regions, reclaim: str
) -> None:
    bj, sh, _ = regions
    stub, job_id = submit(broker, spot_job(f"ckpt-{reclaim}"))
    [first] = launched(bj, job_id)
    assert bj.instances[first]["SpotStrategy"] == "SpotAsPriceGo"
    assert bj.instances[first]["InstanceChargeType"] == "PostPaid"
    env = job_env(bj, first)
    assert env["SZB_CHECKPOINT_INTERVAL_S"] == "1800" and env["SZB_ATTEMPT_NUMBER"] == "1", env
    if reclaim == "notice":
        bj.interrupt_spot(first)  # the broker sees the notice (Recycling lock) before the release
    else:
        bj.release(first)  # released while nobody looked (say, the broker was restarting)
    # Beijing, cheaper, is blocked after the interruption: attempt 2 starts in Shanghai.
    [second] = launched(sh, job_id)
    assert sh.instances[second]["SpotStrategy"] == "SpotAsPriceGo"
    env = job_env(sh, second)
    assert env["SZB_CHECKPOINT_INTERVAL_S"] == "1800" and env["SZB_ATTEMPT_NUMBER"] == "2", env
    play_bootstrap_when_on(stub, broker, job_id, "ali-sh", ecs_user_data([bj.user_data, sh.user_data]))
    final = wait_state(stub, job_id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "ali-sh", final.message
    found = events(stub, job_id)
    kinds = [e.kind for e in found]
    assert "preempted" in kinds and kinds.index("preempted") < kinds.index("requeued"), kinds
    assert "lost" not in kinds, [e.message for e in found]
    if reclaim == "notice":
        # Still up under its notice, the instance is ECS's to release (in ~5 minutes):
        # deleted now, the job would lose its last chance to save a checkpoint.
        assert first in bj.instances, "the broker deleted an instance ECS was about to reclaim"
        assert not [e for e in found if e.kind == "terminated" and first in e.message], kinds
        left = next(e for e in found if e.kind == "left_to_cloud")
        assert first in left.message and "checkpoint" in left.message, left.message
        bj.release(first)


def test_a_spot_interruption_blocks_the_regions_spot_market_not_its_on_demand(
    broker: BrokerProcess, regions: Regions, tmp_path: Path
) -> None:
    """Clouds reclaim spot per capacity pool, to sell it on demand: after an interruption in Beijing
    its A10 spot pool is avoided for `blocklist_ttl.capacity`, but an on-demand job still goes to
    Beijing, the cheaper region, and `szb explain` says which offer is blocked and why."""
    bj, sh, _ = regions
    stub, spot_id = submit(broker, spot_job("reclaimed"))
    [first] = launched(bj, spot_id)
    bj.interrupt_spot(first)
    launched(sh, spot_id)
    _, od_id = submit(broker, spot_job("on-demand", spot=job_pb2.SPOT_MODE_NEVER))
    [od] = launched(bj, od_id)
    assert bj.instances[od]["SpotStrategy"] == "NoSpot", bj.instances[od]
    job = tmp_path / "either.yaml"
    job.write_text(
        "name: either\ncommand: [python3, train.py]\nruntime_estimate: 4h\nmax_wait: 0s\n"
        "spot: allowed\ncheckpoint: {interval: 30m}\n"
        "resources:\n  accelerators: {count: 1, any_of: [A10]}\n"
    )
    out = szb(broker, TOKEN, "explain", str(job), "-o", "json")
    assert out.returncode == 0, out.stderr
    why = {(o["site"], o["spot"]): " ".join(r["message"] for r in o["reasons"])
           for o in json.loads(out.stdout)["offers"]}
    pool = "ali-bj/cn-beijing-i/ecs.gn7i-c8g1.2xlarge/spot"
    assert f"{pool} is blocked after a spot interruption" in why[("ali-bj", True)], why
    assert "blocked" not in why[("ali-bj", False)], why
    for job_id in (spot_id, od_id):
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md())


def test_a_stopped_reclaimed_spot_instance_is_deleted(broker: BrokerProcess, regions: Regions) -> None:
    """Stopped and locked for Recycling, a reclaimed instance has nothing left to save: the
    broker deletes it (a stopped one still holds its disks)."""
    bj, sh, _ = regions
    stub, job_id = submit(broker, spot_job("stopped-reclaim"))
    [first] = launched(bj, job_id)
    bj.reclaim_spot(first)
    launched(sh, job_id)
    deadline = time.monotonic() + 20
    while first in bj.instances:
        assert time.monotonic() < deadline, "a stopped, reclaimed instance was never deleted"
        time.sleep(0.1)
    assert "left_to_cloud" not in [e.kind for e in events_so_far(stub, job_id)]


def test_spot_required_over_the_restart_limit_is_refused_naming_the_limit(
    broker: BrokerProcess, regions: Regions
) -> None:
    # 40 h without checkpoints at 0.05/h: ~e^2 restarts on either region's spot, over the limit 3.
    # Only spot could run it, so it can never run: refused at submit (it used to be accepted and
    # wait QUEUED for ever, "no cloud offer is usable now").
    with pytest.raises(grpc.RpcError) as refused:
        submit(broker, spot_job("no-ckpt", runtime_s=40 * 3600, checkpoint_s=None))
    said = refused.value.details()
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, said
    assert "restarts (limit 3; checkpoint: none)" in said, said
    # One reason per spot offer: the first said, the other counted.
    assert "ali-bj/" in said and "(and 1 more reason(s))" in said, said
    assert not regions[0].instances and not regions[1].instances


def test_a_checkpointing_gang_on_spot_is_priced_at_n_lambda_and_told_its_attempt(
    broker: BrokerProcess, regions: Regions
) -> None:
    bj, sh, _ = regions
    stub, job_id = submit(broker, spot_job("gang-ckpt", nodes=2))
    nodes = launched(bj, job_id)
    deadline = time.monotonic() + 20
    while len(nodes) < 2:
        assert time.monotonic() < deadline, nodes
        nodes = launched(bj, job_id)
    assert {bj.instances[n]["SpotStrategy"] for n in nodes} == {"SpotAsPriceGo"}
    assert len({bj.instances[n]["DeploymentSetId"] for n in nodes}) == 1
    for n in nodes:
        env = job_env(bj, n)
        assert env["SZB_CHECKPOINT_INTERVAL_S"] == "1800" and env["SZB_ATTEMPT_NUMBER"] == "1", env
    placed = next(e for e in events_so_far(stub, job_id, until=has("placed")) if e.kind == "placed")
    assert placed.data["spot_outlook"]["interruptions_per_h"] == pytest.approx(0.1), placed.data
    bj.interrupt_spot(nodes[1])  # one node reclaimed: the whole gang restarts
    again = launched(sh, job_id)
    deadline = time.monotonic() + 20
    while len(again) < 2:
        assert time.monotonic() < deadline, again
        again = launched(sh, job_id)
    for n in again:
        assert job_env(sh, n)["SZB_ATTEMPT_NUMBER"] == "2"
    kinds = [e.kind for e in events_so_far(stub, job_id, until=has("preempted"))]
    assert "preempted" in kinds and "lost" not in kinds, kinds
    # The gang restarts whole: its other node, not reclaimed, is deleted now (it would sit idle
    # and billed until a reconcile pass), even though the reclaimed one was under a notice.
    deadline = time.monotonic() + 20
    while nodes[0] in bj.instances:
        assert time.monotonic() < deadline, "the gang's surviving node was left running"
        time.sleep(0.1)
    assert "left_to_cloud" not in kinds, kinds
    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md())


def test_a_checkpoint_interval_of_days_reaches_the_job_in_whole_seconds(
    broker: BrokerProcess, regions: Regions
) -> None:
    """A wire Duration of 12 days (1,036,800 s) for a 30-day run (on demand: at 0.05/h it expects
    hundreds of restarts on spot): the job reads an integer, not 1.0368e+06."""
    days = spot_job("ckpt-days", runtime_s=30 * 86400, checkpoint_s=12 * 86400, spot=job_pb2.SPOT_MODE_NEVER)
    stub, job_id = submit(broker, days)
    [first] = launched(regions[0], job_id)
    assert job_env(regions[0], first)["SZB_CHECKPOINT_INTERVAL_S"] == "1036800"
    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md())


def events_so_far(
    stub: Stub, job_id: str, until: Callable[[Events], bool] | None = None
) -> list[job_pb2.JobEvent]:
    return job_events.events_so_far(stub, job_id, md(), until)


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        (None, "required"),
        (duration_pb2.Duration(seconds=1800, nanos=500_000_000), "whole number of seconds"),
        (duration_pb2.Duration(nanos=1), "whole number of seconds"),
        (duration_pb2.Duration(seconds=1800, nanos=-5), "not a valid google.protobuf.Duration"),
        (duration_pb2.Duration(seconds=-1800), "must be > 0"),
        (duration_pb2.Duration(seconds=315_576_000_001), "not a valid google.protobuf.Duration"),
        (duration_pb2.Duration(seconds=4 * 3600), "shorter than runtime_estimate (4h)"),
    ],
)
def test_an_odd_checkpoint_interval_on_the_wire_is_invalid_argument_naming_the_field(
    broker: BrokerProcess, regions: Regions, interval: duration_pb2.Duration | None, message: str
) -> None:
    spec = spot_job("odd-ckpt", checkpoint_s=None)
    if interval is None:
        spec.checkpoint.SetInParent()  # a checkpoint message without its interval
    else:
        spec.checkpoint.interval.CopyFrom(interval)
    stub = broker_service_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(broker.address))
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    found = violations(err.value)
    assert any(f == "checkpoint.interval" and message in d for f, d in found), found
    assert not regions[0].instances and not regions[1].instances


def violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations of an INVALID_ARGUMENT status."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out
