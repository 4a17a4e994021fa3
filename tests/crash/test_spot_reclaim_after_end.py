"""A spot instance reclaimed after its job ended: the job's result is on the console.

Issue 11 review, defect 2. The job ends while the broker is down (its exit report cannot be
delivered), then the cloud reclaims the spot instance. The broker, back, must read the result
the bootstrap printed rather than take the attempt for preempted: requeued, the job would run
again, and the offer would be blocked after a spot interruption that never hit a running job.
"""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import grpc
import pytest
from moto.backends import get_backend
from moto.ec2.models.instances import StateReason

from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import TERMINAL, Stub, events, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances, _kill
from tests.crash.test_results_survive import CLOUDS, until
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront

SPOT = "Server.SpotInstanceTermination"


def _reclaim_ec2(moto: MotoFront, iid: str) -> None:
    """EC2 reclaims a spot instance: terminated, with the spot termination as its state reason."""
    ec2 = boto3.client(
        "ec2", endpoint_url=moto.url, region_name="us-east-1",
        aws_access_key_id="AKIDRECLAIM", aws_secret_access_key="reclaim",
    )
    ec2.terminate_instances(InstanceIds=[iid])
    for backends in get_backend("ec2").values():  # moto runs in this process: mark its reason
        inst = backends["us-east-1"].get_instance(iid)
        inst.state_reason = StateReason(f"{SPOT}: Spot instance termination", SPOT)
        return


@pytest.mark.parametrize("site", ["aws-east", "aliyun-bj"])
def test_a_spot_instance_reclaimed_after_its_job_ended_is_not_preempted(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Reclaimed with SZB-RESULT on its console: the job succeeded, once, and the offer is open."""
    book = tmp_path / "ledger.jsonl"
    broker = make_broker(heartbeat_timeout="60s", report_give_up_s=600, spot=True)
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances") as instances:
        with grpc.insecure_channel(broker.address) as channel:
            spec = job_spec("spot-ends", CLOUDS[site], ledger.command(book, "s", 1.0))
            spec.spot = job_pb2.SPOT_MODE_REQUIRED
            job = submit(Stub(channel), spec)
        until(lambda: ledger.runs(book).get("s") == ["start"], timeout=60, what="the job never started")
        broker.kill()
        until(lambda: ledger.runs(book).get("s") == ["start", "end"], what="the job never ended")
        iid = next(iter(instances.booted))
        console = (ecs.console if site == "aliyun-bj" else moto.console)
        until(lambda: "SZB-RESULT" in console.get(iid, ""), what="no result on the console")
        if site == "aliyun-bj":
            ecs.reclaim_spot(iid)  # stopped and locked for Recycling
            _kill(instances.booted[iid].proc)  # a stopped VM runs nothing (the double leaves it)
        else:
            _reclaim_ec2(moto, iid)
        time.sleep(1.0)
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = Stub(channel)
            final = wait_state(stub, job.id, TERMINAL, timeout=40)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 1, final.message
            assert "s finished with 0" in final.log_tail
            kinds = [e.kind for e in events(stub, job.id)]
            assert "preempted" not in kinds and "requeued" not in kinds, kinds
            # The offer was not blocked after a spot interruption: the next spot job runs there.
            spec = job_spec("spot-next", CLOUDS[site], ledger.command(book, "n", 0.2))
            spec.spot = job_pb2.SPOT_MODE_REQUIRED
            after = wait_state(stub, submit(stub, spec).id, TERMINAL, timeout=60)
            assert after.state == job_pb2.JOB_STATE_SUCCEEDED, after.message
    assert ledger.runs(book)["s"] == ["start", "end"]
