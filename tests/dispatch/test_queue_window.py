"""A queue deeper than `dispatch.queue_window`: each full pass decides each tenant's oldest jobs.

Observed at stop 46 (#13's million-job queue): every full pass read and decided the whole queue,
so a scheduler with a million queued jobs grew to 5.6 GB, launched nothing in 300 s and lost its
own lease 14 times. Here a real `szb serve` on the local executor, with a window of 10 and 32
queued jobs of two tenants: a pass decides at most the window's share per tenant, the tenant
whose one job sits past the window by submission order still gets the freed unit first (its
fair share), a tenant's high-priority job submitted last goes before its older normal ones, and
the jobs past the window run in turn as the heads drain.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from prometheus_client.parser import text_string_to_metric_families

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from tests.brokerproc import JOB_PYTHON, BrokerProcess, running_broker, write_broker_folder
from tests.fairshare.test_fair_e2e import wait_state
from tests.local_policy import a800, local_policy

TOKENS = {"flood": "token-flood-0123456789", "small": "token-small-0123456789"}
OPERATOR = "token-ops-window-0123456789"
WINDOW = 10
FLOOD = 30

POLICY = local_policy(
    "  - {id: flood, kind: university, entity_country: CN, share: {priorities: [low, normal, high]}}\n"
    "  - {id: small, kind: university, entity_country: CN}\n",
    a800(1),
    rest="fair_share: {half_life: 1h}\n",
    objective=True,
)


TWO_KINDS = POLICY.replace(
    "      - {name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}\n",
    "      - {name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}\n"
    "      - {name: a100, accelerator: A100, count_per_node: 1, price_hour: 10.0}\n")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    yield from windowed_broker(tmp_path, POLICY)


@pytest.fixture
def two_kinds(tmp_path: Path) -> Iterator[BrokerProcess]:
    yield from windowed_broker(tmp_path, TWO_KINDS)


def windowed_broker(tmp_path: Path, policy: str) -> Iterator[BrokerProcess]:
    config = write_broker_folder(tmp_path / "broker", policy, TOKENS,
                                 broker_extra="metrics_listen: 127.0.0.1:0\n")
    config.write_text(config.read_text().replace(
        "dispatch: {poll_interval_s: 0.2}", f"dispatch: {{poll_interval_s: 0.2, requeue_scan_s: 1, "
                                            f"queue_window: {WINDOW}}}"))
    tokens = config.parent / "tokens.yaml"
    tokens.write_text(tokens.read_text()
                      + f"  - {{tenant: flood, role: operator, sha256: {hash_token(OPERATOR)}}}\n")
    with running_broker(config) as proc:
        yield proc


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def job(
    name: str, seconds: float, priority: int = job_pb2.PRIORITY_NORMAL, kind: str = "A800"
) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"],
                          runtime_estimate=duration_pb2.Duration(seconds=60), priority=priority)
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append(kind)
    return msg


def decided_and_passes(broker: BrokerProcess) -> tuple[float, float]:
    """(decisions made, dispatch passes run) so far, from /metrics."""
    url = next(m.group(1) for line in list(broker.output)
               if (m := re.search(r"metrics on (http://\S+/metrics)", line)))
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {OPERATOR}"})
    with urllib.request.urlopen(asked, timeout=10) as resp:
        text = resp.read().decode()
    decided = passes = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "szb_decisions_total":
                decided += s.value
            elif s.name == "szb_dispatch_pass_seconds_count":
                passes += s.value
    return decided, passes


def test_a_deep_queue_is_decided_by_each_tenants_head_and_drains_in_turn(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        hog = stub.SubmitJob(pb.SubmitJobRequest(job=job("hog", 600)), metadata=auth("flood")).job.id
        wait_state(stub, hog, "flood", {job_pb2.JOB_STATE_RUNNING})
        reqs = [pb.SubmitJobRequest(job=job(f"f{i}", 0.1)) for i in range(FLOOD)]
        flood = [r.job.id for r in stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs),
                                                   metadata=auth("flood")).responses]
        # Past the window by submission order: a pass over the first jobs by id would never see them.
        mine = stub.SubmitJob(pb.SubmitJobRequest(job=job("mine", 0.1)), metadata=auth("small")).job.id
        urgent = stub.SubmitJob(pb.SubmitJobRequest(job=job("urgent", 0.1, job_pb2.PRIORITY_HIGH)),
                                metadata=auth("flood")).job.id
        cut = f"more than {WINDOW} jobs queued: each pass decides the first jobs (by priority, then age)"
        assert broker.said(cut, timeout=30), "".join(broker.output[-20:])
        now = f"the same hardware, {WINDOW // 2 + 1} jobs now"
        assert broker.said(now, timeout=1), "".join(broker.output[-20:])

        # Full passes (one a second) while the single A800 is held: none decides more than the heads.
        before = decided_and_passes(broker)
        wait_state(stub, mine, "small", {job_pb2.JOB_STATE_QUEUED})
        after = before
        for _ in range(50):
            after = decided_and_passes(broker)
            if after[1] - before[1] >= 3:
                break
            wait_state(stub, mine, "small", {job_pb2.JOB_STATE_QUEUED})
            time.sleep(0.2)
        passes, decided = after[1] - before[1], after[0] - before[0]
        assert passes >= 3, (before, after)
        assert decided <= passes * (WINDOW // 2 + 1), (before, after)
        # A job past the window says so, not only its reason of its last decision.
        deep = stub.GetJob(pb.GetJobRequest(id=flood[-1]), metadata=auth("flood")).job
        assert deep.message.endswith(f"not yet decided again: with more than {WINDOW} jobs queued, each "
                                     "pass decides the first (by priority, then age) of each tenant's jobs "
                                     "asking the same hardware, and this one is further back"), deep.message
        assert deep.message.startswith("on-prem wait"), deep.message  # its last decision's reason
        head = stub.GetJob(pb.GetJobRequest(id=flood[0]), metadata=auth("flood")).job
        assert "further back" not in head.message and "in tenant order" in head.message, head.message

        # The unit frees: the small tenant's job (no usage yet) runs before any of the flood's, then
        # the flood's high-priority job, its newest, before its older normal ones.
        stub.CancelJob(pb.CancelJobRequest(id=hog), metadata=auth("flood"))
        first = wait_state(stub, mine, "small", {job_pb2.JOB_STATE_SUCCEEDED}, timeout=60)
        second = wait_state(stub, urgent, "flood", {job_pb2.JOB_STATE_SUCCEEDED}, timeout=60)
        assert second.start_time.ToDatetime() >= first.end_time.ToDatetime(), (first, second)
        # Every job past the window ran in turn (one A800: one after another).
        ended = [wait_state(stub, j, "flood", {job_pb2.JOB_STATE_SUCCEEDED}, timeout=180) for j in flood]
        assert min(j.start_time.ToDatetime() for j in ended) >= second.end_time.ToDatetime(), (second, ended)
        assert broker.said("jobs queued: each pass decides all of them again", timeout=5)


def test_jobs_other_hardware_could_start_are_not_hidden_behind_a_tenants_waiting_ones(
    two_kinds: BrokerProcess,
) -> None:
    """A review's reproducer: the tenant's first 12 jobs wait for its busy A100; with the window
    split per tenant its 3 A800 jobs behind them were never decided again and the A800 sat idle."""
    with grpc.insecure_channel(two_kinds.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        hogs = [stub.SubmitJob(pb.SubmitJobRequest(job=job(f"hog-{k.lower()}", 600, kind=k)),
                               metadata=auth("flood")).job.id for k in ("A100", "A800")]
        for hog in hogs:
            wait_state(stub, hog, "flood", {job_pb2.JOB_STATE_RUNNING})
        try:
            reqs = [pb.SubmitJobRequest(job=job(f"a100-{i}", 0.1, kind="A100")) for i in range(12)]
            stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=auth("flood"))
            reqs = [pb.SubmitJobRequest(job=job(f"a800-{i}", 0.1)) for i in range(3)]
            behind = [r.job.id for r in stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs),
                                                        metadata=auth("flood")).responses]
            assert two_kinds.said(f"more than {WINDOW} jobs queued", timeout=30)
            stub.CancelJob(pb.CancelJobRequest(id=hogs[1]), metadata=auth("flood"))  # the A800 frees
            for job_id in behind:
                wait_state(stub, job_id, "flood", {job_pb2.JOB_STATE_SUCCEEDED}, timeout=60)
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=hogs[0]), metadata=auth("flood"))
