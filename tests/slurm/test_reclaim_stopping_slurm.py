"""Reclaim on Slurm preempts once for a need while the victim is still stopping (szb serve, slurmrestd).

A preempted Slurm job stops at its cut time limit: run time + the grace in whole minutes rounded
up, checked by slurmctld now and then, then KillWait. Its units were booked to the owner's job
for the grace + 10 s only; after that the owner still saw no free A800 (Slurm's capacity), the
victim no longer ran in the book, and the next pass preempted a second borrowed job for the
same need. The units now stay booked until the broker sees the victim stopped.

What is checked is read from what lasts: the borrowed jobs' events (which preemption was for
which job), the owner's recorded decision and the victims' SIGTERM marks. Not the owner's
"still stopping" reason: it is recorded only when a pass decides the owner's job while the
victim stops, and under load the victim can be gone before any pass does (a CI run went from
"reclaiming" straight to "on-prem capacity free").
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from tests.brokerproc import OPERATOR, OPERATOR_LINE, BrokerProcess, copy_hardware_files
from tests.job_events import events_so_far, events_until, has, reached
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_reclaim_grace_slurm import POLICY, SITE, TOKENS, auth, spec, until

pytestmark = pytest.mark.slurm

GRACE_S = 5


@pytest.fixture(scope="module")
def broker(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("reclaim-stopping")
    copy_hardware_files(folder)
    adapter_config = {"url": slurm_cluster.url, "user": slurm_cluster.user,
                      "broker_id": f"szb-stopping-{uuid.uuid4().hex[:8]}",
                      "output_dir": str(folder / "slurm-output"), "timeout_s": 3}
    (folder / "policy.yaml").write_text(POLICY.format(
        site=SITE, adapter_config=json.dumps(adapter_config), grace=GRACE_S))
    (folder / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
        + OPERATOR_LINE + "\n"
    )
    (folder / "broker.yaml").write_text(textwrap.dedent(f"""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {{poll_interval_s: 0.2, reconcile_interval_s: 2}}
        sites:
          {SITE}: {{token: {json.dumps(slurm_cluster.token)}}}
        """))
    proc = BrokerProcess(folder / "broker.yaml")
    proc.start()
    yield proc
    proc.stop()


def test_a_second_borrowed_job_is_not_preempted_while_the_first_stops(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def borrower_script(name: str) -> str:
        return textwrap.dedent(f"""\
            trap 'date +%s.%N > {marks}/{name}.term; exit 0' TERM
            touch {marks}/{name}.ready
            while true; do sleep 0.2; done
            """)

    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def get(job_id: str, tenant: str) -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job

        jobs: list[tuple[str, str]] = []
        try:
            # Two borrowed 2-A800 jobs fill the partition; the older one is started first.
            for name in ("older", "younger"):
                # A short max_wait: preempted, it waits in the broker, not in Slurm's queue.
                job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec(name, borrower_script(name), 2,
                                                                     max_wait_s=10)),
                                        metadata=auth("borrower")).job.id
                jobs.append((job_id, "borrower"))
                ready = marks / f"{name}.ready"
                until(ready.exists, f"the {name} borrowed job runs")
                # And the broker has seen it run: a job it still reads pending in Slurm's queue
                # holds nothing it could reclaim (CI runs preempted the older job, the only one
                # seen running, 2 s after the younger one started).
                until(lambda j=job_id: get(j, "borrower").state == job_pb2.JOB_STATE_RUNNING,
                      f"the broker sees the {name} borrowed job run")
            older, younger = jobs[0][0], jobs[1][0]
            # The owner's 2-A800 job is within its quota: reclaim preempts one borrowed job for it.
            # Its max_wait is below the victim's cut limit, so it waits in the broker, not in Slurm.
            mine = stub.SubmitJob(pb.SubmitJobRequest(job=spec("mine", "echo owner ran", 2, max_wait_s=10)),
                                  metadata=auth("owner")).job.id
            jobs.append((mine, "owner"))
            # On main the older one was preempted too once the younger one's units were no longer booked.
            until(lambda: get(mine, "owner").state == job_pb2.JOB_STATE_SUCCEEDED
                  or get(older, "borrower").state != job_pb2.JOB_STATE_RUNNING,
                  f"the owner's job ran: {get(mine, 'owner')}" + "".join(broker.output[-30:]), timeout=240)
            # The older one was never preempted: the younger one's units met the need (on main it was,
            # 29 s after the younger one, which still ran: Slurm stopped it at its 1 min limit).
            told = events_so_far(stub, older, auth("borrower"))
            assert "preempted" not in [e.kind for e in told], (
                [(e.kind, e.message, json_format.MessageToDict(e.data)) for e in told],
                [(e.kind, e.message) for e in events_so_far(stub, mine, auth("owner"))],
                "".join(broker.output[-40:]))
            assert not (marks / "older.term").exists()
            assert get(older, "borrower").state == job_pb2.JOB_STATE_RUNNING
            # The younger job went (the least work lost), once, for the owner's job.
            seen = events_until(stub, younger, OPERATOR, has("requeued"))
            preempted = [e for e in seen if e.kind == "preempted"]
            assert [e.data["for_job"] for e in preempted] == [mine], [(e.kind, e.message) for e in seen]
            # Slurm reports the job ended once it signals it; the trap writes its mark just after.
            until((marks / "younger.term").exists, "the younger job's SIGTERM trap ran", timeout=30)
            # The owner's job recorded the one preemption it asked for, and no other: every decision
            # it recorded that names victims names the younger job's attempt alone.
            told = events_until(stub, mine, OPERATOR, reached(job_pb2.JOB_STATE_SUCCEEDED))
            recorded = [json_format.MessageToDict(e.data) for e in told]
            asked = [[v["attempt"] for v in d["reclaim"]] for d in recorded if "reclaim" in d]
            assert asked and all(a == [preempted[0].data["attempt"]] for a in asked), (
                asked, [(e.kind, e.message) for e in told])
        finally:
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
