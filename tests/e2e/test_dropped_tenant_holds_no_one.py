"""A queued job whose tenant a reload dropped waits; it must not keep the partition from others."""

from __future__ import annotations

from pathlib import Path

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from tests.e2e.conftest import POLICY, PY, auth
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.e2e.test_policy_reload_tenant_dropped import TEAM_A, held_waiter
from tests.ha.cloud import wait_until


def test_a_dropped_tenants_waiting_job_holds_no_capacity_from_others(tmp_path: Path) -> None:
    with held_waiter(tmp_path) as held:
        stub, job = held.stub, held.job
        held.reload(tmp_path, POLICY.replace(TEAM_A, ""))
        wait_until("the job says its tenant is not declared",
                   lambda: "not declared" in job().pending_reason, timeout=20)
        stub.CancelJob(pb.CancelJobRequest(id=held.busy), metadata=auth("team-b"))
        small = submit(stub, spec("small", [PY, "-c", "print('small ran')"], gpus=1), tenant="team-b").job.id
        done = wait_for(stub, small, TERMINAL, tenant="team-b", timeout=60)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done
        assert job().state == job_pb2.JOB_STATE_QUEUED
        held.restored_and_run(tmp_path)
