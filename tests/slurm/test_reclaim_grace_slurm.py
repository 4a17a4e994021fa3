"""Fair-share reclaim on a Slurm site keeps `reclaim.grace` (szb serve over gRPC, real slurmrestd).

slurmrestd 22.05 cancels with SIGKILL whatever ?signal= says, so a preempted job that traps
SIGTERM to save its state never ran its handler. The adapter now shortens the job's time
limit to its run time + the grace instead: Slurm sends SIGTERM at that limit and SIGKILL
KillWait later (2 s on the test cluster), and the reconciler leaves the stopping job alone.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from tests.brokerproc import OPERATOR, OPERATOR_LINE, BrokerProcess, copy_hardware_files
from tests.job_events import events_until
from tests.slurm.conftest import SlurmCluster

pytestmark = pytest.mark.slurm

SITE = "shangzhuang-onprem"
GRACE_S = 20
TOKENS = {"owner": "token-owner-0123456789", "borrower": "token-borrower-012345"}
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
  - {{id: owner, kind: institute, entity_country: CN, share: {{quota: {{{site}/a800: 2}}}}}}
  - {{id: borrower, kind: sme, entity_country: CN}}
fair_share:
  reclaim: {{grace: {grace}s, max_capacity_share: 0.5, window: 10m}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def broker_folder(
    slurm_cluster: SlurmCluster, folder: Path, policy: str = POLICY, tokens: Mapping[str, str] = TOKENS
) -> Path:
    """A broker.yaml, `policy` (a template like POLICY) on the test cluster and the `tokens` in
    `folder`; its broker.yaml's path."""
    copy_hardware_files(folder)
    adapter_config = {"url": slurm_cluster.url, "user": slurm_cluster.user,
                      "broker_id": f"szb-reclaim-{uuid.uuid4().hex[:8]}",
                      "output_dir": str(folder / "slurm-output"), "timeout_s": 3}
    (folder / "policy.yaml").write_text(policy.format(
        site=SITE, adapter_config=json.dumps(adapter_config), grace=GRACE_S))
    (folder / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in tokens.items())
        + OPERATOR_LINE + "\n"
    )
    # Reconciliation every 2 s: a stopping job it took for a leftover would be cancelled at once.
    (folder / "broker.yaml").write_text(textwrap.dedent(f"""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {{poll_interval_s: 0.2, reconcile_interval_s: 2}}
        sites:
          {SITE}: {{token: {json.dumps(slurm_cluster.token)}}}
        """))
    return folder / "broker.yaml"


@pytest.fixture(scope="module")
def broker(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(broker_folder(slurm_cluster, tmp_path_factory.mktemp("reclaim-slurm")))
    proc.start()
    yield proc
    proc.stop()


def spec(name: str, script: str, gpus: int, max_wait_s: int = 3600) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=["/bin/bash", "-c", script],
                          runtime_estimate=duration_pb2.Duration(seconds=600),
                          max_wait=duration_pb2.Duration(seconds=max_wait_s))
    msg.resources.accelerators.count = gpus
    msg.resources.accelerators.any_of.append("A800")
    return msg


def until(check: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_preempted_slurm_job_gets_sigterm_and_its_clean_up_runs(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # The borrowed job notes when SIGTERM came and saves its state (1 s, within the cluster's
    # KillWait of 2 s).
    script = textwrap.dedent(f"""\
        trap 'date +%s.%N > {marks}/term; sleep 1; touch {marks}/saved; exit 0' TERM
        touch {marks}/ready
        while true; do sleep 0.2; done
        """)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        get = lambda job_id, tenant: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job  # noqa: E731
        # An hour's max_wait: requeued after the preemption, it would go straight back to Slurm's
        # queue ahead of the owner's job (waiting in the broker for the units to read free), and
        # Slurm would restart it on them; it waits while they are booked to the owner's job.
        borrowed = stub.SubmitJob(pb.SubmitJobRequest(job=spec("borrowed", script, 4)),
                                  metadata=auth("borrower")).job.id
        until(lambda: (marks / "ready").exists(), "the borrowed job runs on all four A800s")
        # It waits in the broker (not in Slurm's queue) and reclaims (within its max_wait too: below).
        mine = stub.SubmitJob(pb.SubmitJobRequest(job=spec("mine", "echo owner ran", 1, max_wait_s=60)),
                              metadata=auth("owner")).job.id
        try:
            seen = events_until(stub, borrowed, OPERATOR,
                                lambda seen: any(e.kind == "requeued" for e in seen))
            preempted = [e for e in seen if e.kind == "preempted"]
            assert preempted and preempted[0].data["reclaimed_by"] == "owner", (
                [e.kind for e in seen], [(e.kind, e.message) for e in events_until(
                    stub, mine, auth("owner"), lambda _: False, timeout_s=1)])
            until(lambda: (marks / "saved").exists(),
                  "the preempted job got SIGTERM and finished its clean-up"
                  + f" (term seen: {(marks / 'term').exists()})\n" + "".join(broker.output[-20:]))
            # It ran on for the grace first (on main SIGTERM came within 50 ms of the preemption).
            term = float((marks / "term").read_text())
            assert term >= preempted[0].time.ToNanoseconds() / 1e9 + GRACE_S - 1, (term, preempted[0].time)
            until(lambda: get(mine, "owner").state == job_pb2.JOB_STATE_SUCCEEDED,
                  f"the owner's job ran: {get(mine, 'owner')}")
        finally:
            for job_id, tenant in ((borrowed, "borrower"), (mine, "owner")):
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))


def test_an_owner_job_bound_for_slurms_queue_reclaims_its_quota(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """The owner's job may wait as long as the borrowed work is projected to run (its max_wait
    admits it), so the decision sends it to Slurm's queue; there it waited behind the borrowed
    job for that job's whole run, and nothing was preempted. It now stays in the broker and
    reclaims its quota, as on the local executor."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = f"trap 'exit 0' TERM; touch {marks}/ready; while true; do sleep 0.2; done"
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        get = lambda job_id, tenant: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job  # noqa: E731
        borrowed = stub.SubmitJob(pb.SubmitJobRequest(job=spec("borrowed", script, 4, max_wait_s=10)),
                                  metadata=auth("borrower")).job.id
        until(lambda: (marks / "ready").exists(), "the borrowed job runs on all four A800s")
        # ... and the broker has seen it run: until then it pends in Slurm's queue for the broker,
        # holding nothing reclaim could take back (stop 32's CI: the owner's job was sent to the
        # queue behind it, a race this test is not about; see the README's Reclaim section).
        until(lambda: get(borrowed, "borrower").state == job_pb2.JOB_STATE_RUNNING, "the broker saw it run")
        mine = stub.SubmitJob(pb.SubmitJobRequest(job=spec("mine", "echo owner ran", 1, max_wait_s=86400)),
                              metadata=auth("owner")).job.id
        try:
            seen = events_until(stub, borrowed, OPERATOR,
                                lambda seen: any(e.kind == "requeued" for e in seen))
            preempted = [e for e in seen if e.kind == "preempted"]
            assert preempted and preempted[0].data["reclaimed_by"] == "owner", (
                [e.kind for e in seen], [(e.kind, e.message) for e in events_until(
                    stub, mine, auth("owner"), lambda _: False, timeout_s=1)])
            until(lambda: get(mine, "owner").state == job_pb2.JOB_STATE_SUCCEEDED,
                  f"the owner's job ran: {get(mine, 'owner')}")
        finally:
            for job_id, tenant in ((borrowed, "borrower"), (mine, "owner")):
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
