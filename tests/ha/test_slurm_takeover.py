"""Issue 13 on Slurm: a leader paused in the middle of an sbatch does not leave a second job.

Slurm has no idempotency token: a leader that passed its lease check and is paused (SIGSTOP)
with its submit still on the wire is replaced; the new leader resumes the launch (one Slurm
job), and the old one's submit, delivered late, starts another job for the same attempt. The
active scheduler's reconciler must find that second job and cancel it, not let it run unseen.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.slurm._records import decode_marks
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import JobId
from broker.store import PostgresStore
from tests.ha.cloud import attempts, wait_until
from tests.ha.conftest import LEASE_S, RENEW_S, Cluster
from tests.slurm.conftest import SlurmCluster, slurm_cluster, slurm_clusters
from tests.slurm.gate import Gate
from tests.slurm.onprem import SITE, auth, write_onprem_config

__all__ = ["slurm_cluster", "slurm_clusters"]

pytestmark = pytest.mark.slurm


def slurm_cluster_config(folder: Path, cluster: SlurmCluster, dsn: str, broker_id: str) -> Cluster:
    """Schedulers on the real Slurm; each process reaches slurmrestd at its own SZB_TEST_SLURM_URL."""
    config = write_onprem_config(folder, cluster.env, broker_id=broker_id, reconcile_interval_s=1.0)
    policy = folder / "policy.yaml"
    policy.write_text(policy.read_text().replace('"timeout_s": 3', '"timeout_s": 60'))
    own_url = f"{SITE}: {{url_from_env: SZB_TEST_SLURM_URL, token:"
    text = config.read_text().replace(f"{SITE}: {{token:", own_url)
    config.write_text(text + f"store: {{dsn: '{dsn}'}}\nha: {{lease_s: {LEASE_S}, renew_s: {RENEW_S}}}\n")
    ha = Cluster.__new__(Cluster)
    ha.config, ha.dsn, ha.nodes = config, dsn, []
    return ha


def live_slurm_jobs(cluster: SlurmCluster, broker_id: str) -> dict[str, dict[str, str]]:
    """Slurm job id -> marks, for this broker's jobs that are pending or running."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=PENDING,RUNNING,CONFIGURING", "--format=%i|%k"],
        env={**os.environ, **cluster.env}, capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, _, comment = line.partition("|")
        marks = decode_marks(comment.strip())
        if marks.get("broker") == broker_id:
            jobs[job_id.strip()] = marks
    return jobs


@pytest.fixture
def slurm_ha(
    slurm_cluster: SlurmCluster, tmp_path: Path, pg_dsn: str
) -> Iterator[tuple[Cluster, str, Gate, Gate]]:
    broker_id = f"szb-hasl-{uuid.uuid4().hex[:8]}"
    ha = slurm_cluster_config(tmp_path / "broker", slurm_cluster, pg_dsn, broker_id)
    first, second = Gate(slurm_cluster.url), Gate(slurm_cluster.url)
    try:
        yield ha, broker_id, first, second
    finally:
        first.release()
        second.release()
        ha.stop()
        first.close()
        second.close()
        leftover = list(live_slurm_jobs(slurm_cluster, broker_id))
        if leftover:
            subprocess.run(["scancel", *leftover], env={**os.environ, **slurm_cluster.env}, check=False)


def test_a_submit_the_paused_leader_sent_late_is_cancelled_by_the_new_leader(
    slurm_ha: tuple[Cluster, str, Gate, Gate], slurm_cluster: SlurmCluster
) -> None:
    ha, broker_id, gate_a, gate_b = slurm_ha
    old = ha.start("scheduler", {"SZB_TEST_SLURM_URL": gate_a.url})
    ha.leader()
    ha.start("scheduler", {"SZB_TEST_SLURM_URL": gate_b.url})
    api = ha.start("api", {"SZB_TEST_SLURM_URL": slurm_cluster.url})
    gate_a.hold(only=b"POST ")  # the leader's sbatch waits on the wire
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = job_pb2.JobSpec(
            name="long",
            command=["sleep", "300"],
            runtime_estimate=duration_pb2.Duration(seconds=600),
            resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A800"])),
        )
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
        wait_until("the leader's submit waits at the gate", lambda: any(b"POST " in d for d in gate_a.held))
        old.pause()
        try:
            new = ha.leader(among=[n for n in ha.nodes if n is not old])
            wait_until(
                "the new leader resumed the launch",
                lambda: any(a.backend_id for a in attempts(ha.dsn, job_id)),
                timeout=60,
            )
            gate_a.release()  # the old leader's submit arrives late: a second Slurm job
            wait_until("a second job started", lambda: len(live_slurm_jobs(slurm_cluster, broker_id)) == 2)
        finally:
            old.resume()
        [attempt] = attempts(ha.dsn, job_id)
        # The new leader's reconciler cancels the job its attempt does not follow.
        wait_until(
            "only the attempt's own Slurm job is left",
            lambda: list(live_slurm_jobs(slurm_cluster, broker_id)) == [attempt.backend_id],
            timeout=30,
        )
        time.sleep(3)  # three more reconcile passes (one a second) leave the followed job alone
        assert list(live_slurm_jobs(slurm_cluster, broker_id)) == [attempt.backend_id]
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job
        assert job.state == job_pb2.JOB_STATE_RUNNING, job
        store = PostgresStore(ha.dsn)
        try:
            kinds = [e.kind for e in store.events_after(JobId(job_id), 0)]
        finally:
            store.close()
        assert "duplicate_terminated" in kinds, kinds
        assert new.leading()
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
