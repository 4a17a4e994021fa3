"""The submit path through a real broker: batches are all or nothing per job with every bad job
named, concurrent submits from many callers are stored once each and survive a SIGKILL, and
answers kept per policy (vetting) follow a policy reload."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, _violations, spec, wait_for
from tests.e2e.test_policy_reload import policy_hash, wait_hash

QUICK = [PY, "-c", "pass"]
HOLD = [PY, "-c", "import time; time.sleep(120)"]
"""Takes all four A800s of the test inventory, so one-GPU jobs wait behind it (and start
nothing) while a test looks at them; it ends by itself soon after."""


def _labelled(name: str, suite: str) -> job_pb2.JobSpec:
    msg = spec(name, QUICK, gpus=1)
    msg.labels["suite"] = suite
    return msg


def _hold(stub: broker_service_pb2_grpc.BrokerServiceStub, tenant: str) -> str:
    job = spec("holder", HOLD, gpus=4)
    return str(stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth(tenant)).job.id)


def _release(broker: BrokerProcess, holder: str, tenant: str) -> None:
    """Cancel the holder before the broker stops: a local job outlives its broker by design."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        stub.CancelJob(pb.CancelJobRequest(id=holder), metadata=auth(tenant))
        wait_for(stub, holder, TERMINAL, tenant=tenant, timeout=60)


def _listed(stub: broker_service_pb2_grpc.BrokerServiceStub, suite: str, tenant: str) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = stub.ListJobs(
            pb.ListJobsRequest(labels={"suite": suite}, page_size=1000, page_token=token),
            metadata=auth(tenant),
        )
        ids.extend(j.id for j in page.jobs)
        token = page.next_page_token
        if not token:
            return ids


def test_batch_names_every_bad_job_and_stores_none(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    holder = ""
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            holder = _hold(stub, "team-a")
            jobs = [_labelled(f"mixed-{i}", "mixed") for i in range(5)]
            jobs[1].resources.accelerators.count = -1
            jobs[3].resources.accelerators.any_of[:] = ["A80O"]  # a typo of A800
            requests = [pb.SubmitJobRequest(job=j) for j in jobs]
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJobs(pb.SubmitJobsRequest(requests=requests), metadata=auth("team-a"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            found = dict(_violations(err.value))
            assert found["requests[1].job.resources.accelerators.count"] == "must be >= 0"
            typo = found["requests[3].job.resources.accelerators.any_of[0]"]
            assert "unknown accelerator 'A80O'" in typo and "A800" in typo
            assert {f.split(".")[0] for f in found} == {"requests[1]", "requests[3]"}, found
            assert _listed(stub, "mixed", "team-a") == []
            # The same batch without its two bad jobs is stored whole, in order.
            good = [requests[i] for i in (0, 2, 4)]
            answer = stub.SubmitJobs(pb.SubmitJobsRequest(requests=good), metadata=auth("team-a"))
            assert [r.job.spec.name for r in answer.responses] == ["mixed-0", "mixed-2", "mixed-4"]
            assert all(r.created and r.job.state == job_pb2.JOB_STATE_QUEUED for r in answer.responses)
            assert sorted(_listed(stub, "mixed", "team-a")) == sorted(r.job.id for r in answer.responses)
    finally:
        if holder:
            _release(broker, holder, "team-a")
        broker.stop()


def test_concurrent_submits_are_stored_once_each_and_survive_a_kill(tmp_path: Path) -> None:
    """Eight callers at once (single submits and batches, retried with the same client ids):
    every acknowledged job is there after a SIGKILL, exactly once."""
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    acked: dict[str, str] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    holder = ""

    def caller(n: int, address: str) -> None:
        try:
            with grpc.insecure_channel(address) as channel:
                stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
                for i in range(25):
                    key = f"c{n}-single-{i}"
                    req = pb.SubmitJobRequest(job=_labelled(f"single-{n}-{i}", "flood"), client_id=key)
                    job = stub.SubmitJob(req, metadata=auth("team-b")).job
                    with lock:
                        acked[key] = job.id
                batch = [
                    pb.SubmitJobRequest(job=_labelled(f"batch-{n}-{i}", "flood"), client_id=f"c{n}-batch-{i}")
                    for i in range(100)
                ]
                answer = stub.SubmitJobs(pb.SubmitJobsRequest(requests=batch), metadata=auth("team-b"))
                with lock:
                    acked.update(
                        {r.client_id: a.job.id for r, a in zip(batch, answer.responses, strict=True)}
                    )
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    try:
        with grpc.insecure_channel(broker.address) as channel:
            holder = _hold(broker_service_pb2_grpc.BrokerServiceStub(channel), "team-b")
        threads = [threading.Thread(target=caller, args=(n, broker.address)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(acked) == 8 * 125 and len(set(acked.values())) == 8 * 125
        broker.kill()
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            stored = _listed(stub, "flood", "team-b")
            assert sorted(stored) == sorted(acked.values()), "an acknowledged job was lost or doubled"
            # Retries with the same client ids find the stored jobs and store nothing new.
            keys = sorted(acked)[:50]
            retry = [pb.SubmitJobRequest(job=_labelled("retry", "flood"), client_id=key) for key in keys]
            answer = stub.SubmitJobs(pb.SubmitJobsRequest(requests=retry), metadata=auth("team-b"))
            assert [a.created for a in answer.responses] == [False] * 50
            assert [a.job.id for a in answer.responses] == [acked[key] for key in keys]
            assert len(_listed(stub, "flood", "team-b")) == len(acked)
    finally:
        if holder:
            _release(broker, holder, "team-b")
        broker.stop()


def test_vetting_follows_a_policy_reload(tmp_path: Path) -> None:
    """An accelerator unknown to the policy is refused by name; once a reloaded catalog knows
    it, the same spec gets past vetting (answers are kept per policy, not forever)."""
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    catalog = (tmp_path / "accelerators.yaml").read_text()
    (tmp_path / "accelerators-2.yaml").write_text(
        catalog
        + "  - name: ZX9000\n    vendor: Example\n    family: ZX9000\n    memory_gb: 80\n"
        "    dense_tops: {bf16: 100}\n    interconnect_gbps: 100\n    datacenter: true\n"
        "    origin_country: CN\n"
        "    power_w: 300\n    provenance: test double\n"
    )
    job = spec("new-chip", [PY, "-c", "pass"], gpus=1)
    job.resources.accelerators.any_of[:] = ["ZX9000"]
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for _ in range(2):  # the second answer comes from what the first one remembered
                with pytest.raises(grpc.RpcError) as err:
                    stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth("team-a"))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                fields = [f for f, _ in _violations(err.value)]
                assert fields == ["resources.accelerators.any_of[0]"]
            first = policy_hash(stub)
            (tmp_path / "policy.yaml").write_text(
                POLICY.replace("accelerators: accelerators.yaml", "accelerators: accelerators-2.yaml")
            )
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGHUP)
            wait_hash(stub, first)
            # Known now, but no site offers it: no longer a field error, a placement refusal.
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth("team-a"))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    finally:
        broker.stop()


def test_quota_limits_follow_a_policy_reload(tmp_path: Path) -> None:
    """Limits are resolved once per policy: a reload that lowers one tenant's max_labels
    applies to its next submit, and only to that tenant."""
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    job = spec("labelled", [PY, "-c", "pass"], labels={"a": "1", "b": "2", "c": "3"})
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for tenant in ("team-a", "team-b"):  # the limits of both are resolved (and kept)
                assert stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth(tenant)).created
            first = policy_hash(stub)
            lowered = POLICY.replace(
                "{id: team-a, kind: university, entity_country: CN}",
                "{id: team-a, kind: university, entity_country: CN, limits: {max_labels: 2}}",
            )
            assert lowered != POLICY
            (tmp_path / "policy.yaml").write_text(lowered)
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGHUP)
            wait_hash(stub, first)
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth("team-a"))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_labels" in (err.value.details() or "")
            assert stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth("team-b")).created
    finally:
        broker.stop()
