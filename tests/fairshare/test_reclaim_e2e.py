"""Reclaim end to end on the local executor: borrowed work is preempted when the owner needs its quota.

Issue 14: the borrower's job gets SIGTERM (it may clean up within the grace), is requeued with
its history, and the owner's job starts.
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.brokerproc import BrokerProcess, running_broker, write_broker_folder
from tests.clouds.test_metrics_e2e import OPERATOR, metrics_url, scrape, value
from tests.fairshare.local_site import Metadata, a800_job, bearer, policy

TOKENS = {"owner": "token-owner-0123456789", "borrower": "token-borrower-012345"}

POLICY = policy(
    "  - {id: owner, kind: institute, entity_country: CN, share: {quota: {local/a800: 2}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN}",
    per_node=4, rest="fair_share:\n  reclaim: {grace: 5s, max_capacity_share: 0.5, window: 10m}",
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("reclaim")
    config = write_broker_folder(folder, POLICY, TOKENS, broker_extra="metrics_listen: 127.0.0.1:0\n")
    with (folder / "tokens.yaml").open("a") as tokens:  # Prometheus' operator token
        tokens.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "prometheus") + "\n")
    with running_broker(config) as proc:
        yield proc


def auth(tenant: str) -> Metadata:
    return bearer(TOKENS, tenant)


def job(name: str, code: str) -> job_pb2.JobSpec:
    return a800_job(name, code)


def get(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, tenant: str) -> job_pb2.Job:
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job


def until(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_reclaim_preempts_borrowed_work_and_the_owner_starts(broker: BrokerProcess, tmp_path: Path) -> None:
    # Jobs run sandboxed as the job user, who cannot enter the test's private tmp folder.
    marks = Path(tempfile.mkdtemp(prefix="szb-marks-"))
    marks.chmod(0o1777)
    # Each borrowed job notes the SIGTERM it gets, then exits within the grace period.
    code = textwrap.dedent(f"""\
        import os, signal, sys, time
        marks = {str(marks)!r}
        def term(*_):
            open(os.path.join(marks, "term-" + str(os.getpid())), "w").close()
            sys.exit(143)
        signal.signal(signal.SIGTERM, term)
        open(os.path.join(marks, "ready-" + str(os.getpid())), "w").close()
        time.sleep(120)
        """)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        borrowed = [
            stub.SubmitJob(pb.SubmitJobRequest(job=job(f"b{i}", code)), metadata=auth("borrower")).job.id
            for i in range(4)
        ]
        until(
            lambda: all(get(stub, j, "borrower").state == job_pb2.JOB_STATE_RUNNING for j in borrowed),
            "the borrower fills the partition",
        )
        until(lambda: len(list(marks.glob("ready-*"))) == 4, "the borrowed jobs are ready for SIGTERM")
        mine = stub.SubmitJob(
            pb.SubmitJobRequest(job=job("mine", "print('owner ran')")), metadata=auth("owner")
        ).job
        until(lambda: get(stub, mine.id, "owner").state == job_pb2.JOB_STATE_SUCCEEDED, "the owner's job ran")
        # Nor is the owner told which tenant's work, or which jobs, it reclaimed (its waiting
        # event's decision data listed each victim's attempt id and tenant).
        told = [f"{e.message} {json_format.MessageToJson(e.data)}" for e in _events(stub, mine.id, "owner")]
        assert "reclaim" in " ".join(told), told
        assert not [t for t in told if "borrower" in t or any(j in t for j in borrowed)], told

        # Each read of a live job's history is cut after 2 s, and a loaded broker may send little
        # or nothing in that time: read again until one shows the preemption (a history only
        # grows, so the longest read of each job is kept), then check every history as read.
        histories: dict[str, list[job_pb2.JobEvent]] = {j: [] for j in borrowed}

        def seen_preempted() -> bool:
            for j in borrowed:
                if len(got := _events(stub, j)) > len(histories[j]):
                    histories[j] = got
            return any(_preempted_then_requeued(h) for h in histories.values())

        until(seen_preempted, "no borrowed job's history shows it preempted and requeued")
        preempted = []
        for j in borrowed:
            events = histories[j]
            kinds = [e.kind for e in events]
            if "preempted" in kinds:
                preempted.append(j)
                ev = events[kinds.index("preempted")]
                # The borrower is told another tenant reclaimed it: not which one, nor its job.
                assert "another tenant's" in ev.message, ev.message
                told = [e.message for e in events] + [str(dict(e.data)) for e in events]
                assert not [t for t in told if "owner" in t or mine.id in t], told
                # The work the preemption lost is counted (the run so far: it has no checkpoint).
                assert float(ev.data["lost_unit_s"]) > 0 and "work lost:" in ev.message
                assert kinds[kinds.index("preempted") + 1] == "requeued"  # history kept, back in the queue
        # Exactly one borrowed job made room for the owner's one accelerator.
        assert len(preempted) == 1
        lost = next(float(e.data["lost_unit_s"]) for e in histories[preempted[0]] if e.kind == "preempted")
        samples = scrape(metrics_url(broker))  # and /metrics counts it (none did)
        assert value(samples, "szb_reclaim_lost_unit_seconds_total", site="local", tenant="borrower") == (
            pytest.approx(lost, rel=1e-3)
        )
        assert len(list(marks.glob("term-*"))) == 1, "the preempted job got SIGTERM and could clean up"
        victim = get(stub, preempted[0], "borrower")
        assert victim.state in (
            job_pb2.JOB_STATE_QUEUED,
            job_pb2.JOB_STATE_PLACING,
            job_pb2.JOB_STATE_PROVISIONING,
            job_pb2.JOB_STATE_RUNNING,
        )
        for j in borrowed:
            stub.CancelJob(pb.CancelJobRequest(id=j), metadata=auth("borrower"))


def _preempted_then_requeued(events: list[job_pb2.JobEvent]) -> bool:
    kinds = [e.kind for e in events]
    return "preempted" in kinds and "requeued" in kinds[kinds.index("preempted") :]


def _events(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, tenant: str = "borrower"
) -> list[job_pb2.JobEvent]:
    out = []
    try:
        for resp in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=auth(tenant), timeout=2):
            out.append(resp.event)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return out
