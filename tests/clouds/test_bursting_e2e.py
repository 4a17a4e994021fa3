"""Overflow bursting through the real broker: a peak against 8 on-prem GPUs, budgets, spot.

On-prem is the local executor with 8 A800 slots (jobs really run); the clouds are the
Alibaba ECS doubles in two regions, reached by the real SDK. The test plays each instance's
bootstrap through AgentService.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import Regions, StartBroker
from tests.clouds.e2e_helpers import (
    TERMINAL,
    TOKEN,
    UserDataFn,
    ecs_user_data,
    events,
    md,
    play_bootstrap_when_on,
    wait_state,
)
from tests.doubles.ecs_endpoint import EcsEndpoint
from tests.job_events import Events, events_until, has

POOR_TOKEN = "token-poor-sme-000000000"

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800.replace("count_per_node: 1", "count_per_node: 8")
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY", spot=True)
    + on_moto.cloud_site("ali-sh", "alibaba", "cn-shanghai", "ali-sh.csv", currency="CNY", spot=True)
    + """\
tenants:
  - {id: lab, kind: partner, entity_country: SG}
  - {id: poor, kind: sme, entity_country: SG, monthly_budget: 30}
burst:
  sites:
    ali-bj: {max_provisioning: 50}
    ali-sh: {max_provisioning: 50}
  heartbeat_timeout: 1h
"""
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def broker(
    ecs_server: EcsEndpoint, regions: Regions, start_broker: StartBroker
) -> BrokerProcess:
    setup = on_moto.BrokerSetup(
        POLICY,
        tokens={"lab": TOKEN, "poor": POOR_TOKEN},
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
    return start_broker(setup)


def spec(
    name: str,
    accels: list[str],
    *,
    max_wait_s: int,
    runtime_s: int = 3600,
    seconds: float = 1.0,
    spot: int = job_pb2.SPOT_MODE_NEVER,
) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"],
        runtime_estimate=duration_pb2.Duration(seconds=runtime_s),
        max_wait=duration_pb2.Duration(seconds=max_wait_s),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=accels)),
        spot=spot,  # type: ignore[arg-type]
    )


def bootstrap_cloud_jobs(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    broker: BrokerProcess,
    ids: list[str],
    stop: threading.Event,
    user_data: UserDataFn,
) -> None:
    """Play the bootstrap for every job that lands on a cloud, until told to stop."""
    done: set[str] = set()
    while not stop.is_set():
        for job_id in ids:
            if job_id in done:
                continue
            job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job
            if job.site.startswith("ali") and job.state in (
                job_pb2.JOB_STATE_PROVISIONING,
                job_pb2.JOB_STATE_RUNNING,
            ):
                play_bootstrap_when_on(stub, broker, job_id, job.site, user_data)
                done.add(job_id)
        time.sleep(0.1)


def test_peak_of_40_jobs_on_8_gpus_bursts_only_the_impatient(
    broker: BrokerProcess, regions: Regions
) -> None:
    user_data = ecs_user_data([regions[0].user_data, regions[1].user_data])
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        # Alternate impatient (1 min) and patient (1 day) jobs; each could use A800 on-prem or A10 in a cloud.
        reqs = [
            pb.SubmitJobRequest(job=spec(f"peak-{i}", ["A800", "A10"], max_wait_s=60 if i % 2 else 86400))
            for i in range(40)
        ]
        resp = stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=md())
        ids = [r.job.id for r in resp.responses]
        stop = threading.Event()
        helper = threading.Thread(
            target=bootstrap_cloud_jobs, args=(stub, broker, ids, stop, user_data), daemon=True
        )
        helper.start()
        try:
            finals = [wait_state(stub, job_id, TERMINAL, timeout=90) for job_id in ids]
        finally:
            stop.set()
            helper.join(timeout=10)
    assert all(j.state == job_pb2.JOB_STATE_SUCCEEDED for j in finals), [j.message for j in finals]
    # Deadline order within a priority: the batch arrives at once, so the impatient jobs (due in
    # a minute) take the eight free slots, the rest of them burst and the patient ones wait.
    earliest_due = {ids[i] for i in range(1, 16, 2)}
    for i, job in enumerate(finals):
        impatient = i % 2 == 1
        if job.id in earliest_due:
            assert job.site == "onprem", (i, job.site)  # on-prem was free when they were decided
        elif impatient:
            assert job.site == "ali-bj", (i, job.site, job.message)  # would have waited > 1 min
        else:
            assert job.site == "onprem", (i, job.site)  # a day of patience: waited and ran on-prem
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        status = stub.GetStatus(pb.GetStatusRequest(), metadata=md())
        assert status.burst_decisions_last_hour == 12
        placed = next(e for e in events(stub, ids[17]) if e.kind == "placed")
        assert placed.data["action"] == "run" and placed.data["onprem_expected_wait_s"] > 60
        assert placed.data["cloud_total_cost"] < placed.data["onprem_total_cost"]
    broker.stop()  # the hour's bursts are read back from the store, not started from none
    broker.restart()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        assert stub.GetStatus(pb.GetStatusRequest(), metadata=md()).burst_decisions_last_hour == 12


def test_tenant_at_its_budget_never_bursts_under_concurrent_submissions(broker: BrokerProcess) -> None:
    """30 CNY a month buys two 1-hour A10 bursts (13.90 each); twelve racing submissions get two."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        ids: list[str] = []
        lock = threading.Lock()

        def submit(i: int) -> None:
            job = stub.SubmitJob(
                pb.SubmitJobRequest(job=spec(f"poor-{i}", ["A10"], max_wait_s=60)), metadata=md(POOR_TOKEN)
            ).job
            with lock:
                ids.append(job.id)

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def jobs_now() -> list[job_pb2.Job]:
            return [stub.GetJob(pb.GetJobRequest(id=i), metadata=md(POOR_TOKEN)).job for i in ids]

        def provisioned_of(jobs: list[job_pb2.Job]) -> list[job_pb2.Job]:
            return [j for j in jobs if j.state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING)]

        deadline = time.monotonic() + 20
        while len(provisioned_of(jobs_now())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # more dispatch passes: nothing else may burst
        jobs = jobs_now()
        provisioned = provisioned_of(jobs)
        queued = [j for j in jobs if j.state == job_pb2.JOB_STATE_QUEUED]
        assert len(provisioned) == 2 and len(queued) == 10
        spend = stub.GetSpend(pb.GetSpendRequest(), metadata=md(POOR_TOKEN))
        assert sum(line.reserved + line.spent for line in spend.lines) <= 30.0
        assert spend.budget == 30.0 and spend.budget_left == pytest.approx(30.0 - 2 * 13.9)
        history = events_until_now(stub, queued[0].id, POOR_TOKEN, until=has("waiting", "budget"))
        waiting = [e.message for e in history if e.kind == "waiting"]
        assert any("budget" in m for m in waiting), waiting


def events_until_now(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    token: str,
    until: Callable[[Events], bool] | None = None,
) -> list[job_pb2.JobEvent]:
    """A job that is still queued: read its events so far without waiting for the end; given
    `until`, read until those events have arrived (a loaded broker may send them late)."""
    if until is not None:
        return events_until(stub, job_id, md(token), until)
    out = []
    stream = stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=md(token), timeout=2)
    try:
        for resp in stream:
            out.append(resp.event)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    return out


def test_spot_preemption_requeues_in_another_region_and_completes(
    broker: BrokerProcess, regions: Regions
) -> None:
    bj, sh, _ = regions
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(
            pb.SubmitJobRequest(job=spec("spotty", ["A10"], max_wait_s=60, spot=job_pb2.SPOT_MODE_REQUIRED)),
            metadata=md(),
        ).job
        deadline = time.monotonic() + 20
        while not bj.instances:
            assert time.monotonic() < deadline, "never launched in cn-beijing"
            time.sleep(0.1)
        [instance_id] = list(bj.instances)
        assert bj.instances[instance_id]["SpotStrategy"] == "SpotAsPriceGo"
        bj.reclaim_spot(instance_id)
        play_bootstrap_when_on(stub, broker, job.id, "ali-sh", ecs_user_data([bj.user_data, sh.user_data]))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "ali-sh"
        kinds = [e.kind for e in events(stub, job.id)]
    assert "preempted" in kinds and kinds.index("preempted") < kinds.index("requeued")
    assert len(sh.instances) <= 1
