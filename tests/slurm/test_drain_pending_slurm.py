"""Draining a Slurm site withdraws the broker's jobs that pend in Slurm's own queue (szb serve, real Slurm).

A drain kept new work off the site, but a job already sent to Slurm's queue and not started yet
stayed there, and Slurm started it on the drained site as soon as its units freed. Such a job is
now taken back into the broker's queue (its attempt closed as never started, Slurm's copy
cancelled, no exit code, a `requeued` event naming the drain); what runs there runs on.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import OPERATOR, BrokerProcess
from tests.job_events import events_so_far, events_until, has
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_reclaim_grace_slurm import SITE, broker_folder, spec, until

pytestmark = pytest.mark.slurm

TOKENS = {"team": "token-team-drain-0123456789"}
POLICY = """\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: {site}
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: a800, accelerator: A800, count_per_node: 4, price_hour: 14.0, cpus_per_node: 16}}
    adapter_config: {adapter_config}
tenants:
  - {{id: team, kind: university, entity_country: CN}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""
TEAM = (("authorization", f"Bearer {TOKENS['team']}"),)
RUNNING = job_pb2.JOB_STATE_RUNNING


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    slurm_cluster.wait_usable()
    folder = tmp_path / "broker"
    folder.mkdir()
    config = broker_folder(slurm_cluster, folder, POLICY, TOKENS)
    text = config.read_text()
    # (scanned every second: the drain's withdrawal is the scan's, the test need not wait 15 s)
    config.write_text(text.replace("reconcile_interval_s: 2}", "reconcile_interval_s: 2, requeue_scan_s: 1}"))
    assert config.read_text() != text
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def slurm_state(cluster: SlurmCluster, backend_id: str) -> str:
    """Slurm's own state of the job (`scontrol show job`), as its `JobState=` says."""
    out = subprocess.run(["scontrol", "-o", "show", "job", backend_id], capture_output=True, text=True,
                         timeout=30, check=False, env={**os.environ, **cluster.env})
    for word in out.stdout.split():
        if word.startswith("JobState="):
            return word.removeprefix("JobState=")
    return f"unknown ({out.stdout}{out.stderr})".strip()


def test_draining_a_site_withdraws_the_jobs_pending_in_its_queue(
    broker: BrokerProcess, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    holder_script = f"trap 'exit 0' TERM; touch {marks}/holder; while true; do sleep 0.2; done"
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        get = lambda job_id: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=TEAM).job  # noqa: E731
        jobs: list[str] = []

        def submit(name: str, script: str) -> str:
            # All four A800s each: the second pends behind the first whoever else uses the cluster.
            job = spec(name, script, 4, max_wait_s=86400)
            jobs.append(stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=TEAM).job.id)
            return jobs[-1]

        try:
            holder = submit("holder", holder_script)
            until(lambda: (marks / "holder").exists(), "the first job runs on all four A800s")
            waiter = submit("waiter", f"touch {marks}/waiter")
            sent = events_until(stub, waiter, TEAM, has("attempt", "sent to its queue"))
            assert has("attempt", "sent to its queue")(sent), [(e.kind, e.message) for e in sent]

            stub.DrainSite(pb.DrainSiteRequest(site=SITE, reason="rack 4 maintenance"), metadata=OPERATOR)
            seen = events_until(stub, waiter, TEAM, has("requeued"), timeout_s=60)
            told = [(e.kind, e.message) for e in seen]
            withdrawn = [e for e in seen if e.kind == "requeued"]
            # On main: it stayed in Slurm's queue, to start on the drained site when the first ended.
            assert withdrawn, told
            assert withdrawn[0].message.startswith(f"withdrawn from {SITE}'s queue"), told
            assert "drained by ops: rack 4 maintenance" in withdrawn[0].message, told
            backend_id = withdrawn[0].data["backend_id"]
            until(lambda: slurm_state(slurm_cluster, backend_id) == "CANCELLED",
                  f"Slurm's copy {backend_id} is cancelled", timeout=60)

            time.sleep(3)  # (several scans and passes: nothing sends it back to the drained site)
            job = get(waiter)
            assert job.state == job_pb2.JOB_STATE_QUEUED, job.message
            assert not job.HasField("exit_code") and job.attempts == 1, job
            assert "drained by ops: rack 4 maintenance" in job.message, job.message
            assert not (marks / "waiter").exists()
            kinds = [e.kind for e in events_so_far(stub, waiter, TEAM)]
            assert kinds.count("attempt") == 1 and "failed" not in kinds, kinds
            # What runs there runs on: a drain is no preemption.
            assert get(holder).state == RUNNING

            stub.UndrainSite(pb.UndrainSiteRequest(site=SITE), metadata=OPERATOR)
            again = events_until(stub, waiter, TEAM, lambda es: [e.kind for e in es].count("attempt") == 2)
            assert [e.kind for e in again].count("attempt") == 2, [(e.kind, e.message) for e in again]
        finally:
            for job_id in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=TEAM)
