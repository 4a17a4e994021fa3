"""A job cancelled through an API replica while its leader's launch is in flight, and the leader
dies: the next leader looks the attempt's token up at the cloud before calling it never started."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.model import AttemptState
from tests.clouds.e2e_helpers import md
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.ha.cloud import A10, SlowCloud, attempts, cloud_cluster, gpu_spec, wait_until


def test_an_instance_launched_for_a_job_cancelled_during_a_takeover_is_stopped_and_billed(
    tmp_path: Path, pg_dsn: str, ecs_server: EcsEndpoint
) -> None:
    """Found by a review of issue 13: the new leader closed the attempt as 'never started', spend
    0, and the instance RunInstances made stayed up until the periodic reconcile (60 s later)."""
    cloud = EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",))
    slow = SlowCloud(cloud, delay_s=3.0)  # the instance exists only once the dead leader's call lands
    ecs_server.handler = slow
    split = cloud_cluster(tmp_path / "broker", pg_dsn, ecs_server.address)
    # An operator's reconcile interval: what stops the instance must not be the periodic pass.
    text = split.config.read_text()
    split.config.write_text(text.replace("reconcile_interval_s: 2", "reconcile_interval_s: 600"))
    try:
        api = split.start("api")
        split.start("scheduler")
        split.start("scheduler")
        old = split.leader()
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("mid-launch")), metadata=md()).job
            wait_until("RunInstances is in flight", lambda: bool(slow.run_calls))
            old.kill()
            stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())
        new = split.leader(among=[n for n in split.nodes if n is not old])
        took = time.monotonic()
        wait_until("the instance is gone", lambda: bool(cloud.tokens) and not cloud.instances, timeout=30,
                   shown=new.text)
        assert time.monotonic() - took < 20, "left for the periodic reconcile"
        # The attempt is closed after the cloud's cancel returns: two steps, not one.
        wait_until("the attempt is closed", lambda: attempts(pg_dsn, job.id)[0].state.terminal, timeout=10,
                   shown=new.text)
        [attempt] = attempts(pg_dsn, job.id)
        assert attempt.state == AttemptState.CANCELLED
        assert attempt.backend_id is not None and attempt.backend_id in {
            i for ids in cloud.tokens.values() for i in ids
        }
        assert "never" not in (attempt.error or "") and attempt.backend_id in (attempt.error or "")
        assert sum(slow.run_calls.values()) == 1, "the new leader must not launch it again"
    finally:
        split.stop()
