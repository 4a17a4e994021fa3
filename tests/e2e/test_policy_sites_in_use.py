"""A policy that drops (or renames) a site where jobs still run is refused, live and at a restart.

Found by an acceptance review of issue 11: the broker follows an attempt only through its
site's adapter, so after a restart with such a policy a local job stayed RUNNING forever, its
exit code on disk never read (a cloud instance's death never noticed), with nothing said.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.e2e.test_policy_reload import policy_hash, wait_hash

RENAMED = POLICY.replace("  - id: local\n", "  - id: host\n")


def wait_refused(log: Path) -> None:
    """Until the broker's log says it refused the policy file it was given."""
    deadline = time.monotonic() + 15
    while "policy reload refused" not in log.read_text():
        assert time.monotonic() < deadline, "a policy without the running job's site went into force"
        time.sleep(0.2)


def test_a_policy_without_the_site_of_a_running_job_is_refused(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    policy = tmp_path / "policy.yaml"
    shared = Path(tempfile.mkdtemp(prefix="szb-release-"))
    shared.chmod(0o755)  # the job user looks for the release file here
    release = shared / "release"
    code = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.1)\nprint('done')"
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            before = policy_hash(stub)
            job = submit(stub, spec("held", [PY, "-c", code])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            # Live: the reload is refused and the policy in force kept.
            policy.write_text(RENAMED)
            wait_refused(tmp_path / "broker.log")
            assert policy_hash(stub) == before
            assert f"sites: 'local' is gone, but 1 job(s) still run there ({job.id})" in (
                tmp_path / "broker.log"
            ).read_text()
        # At a restart: the broker says so and does not start, rather than lose sight of the job.
        broker.kill()
        gone = rf"sites: 'local' is gone, but 1 job\(s\) still run there \({job.id}\)"
        with pytest.raises(RuntimeError, match=gone):
            broker.restart()
        release.touch()
        policy.write_text(POLICY)
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            final = wait_for(stub, job.id, TERMINAL)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED and "done" in final.log_tail
    finally:
        release.touch()
        broker.stop()


def test_a_policy_refused_for_running_jobs_goes_into_force_once_they_end(tmp_path: Path) -> None:
    """Review: a reload refused because jobs still ran at a site it drops stayed refused after they
    ended (the file was unchanged, so it was never read again): the old policy stayed in force and
    `szb status` kept calling the file invalid. The operator did what the message said."""
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    policy = tmp_path / "policy.yaml"
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            before = policy_hash(stub)
            job = submit(stub, spec("held", [PY, "-c", "import time; time.sleep(300)"])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            policy.write_text(RENAMED)
            wait_refused(tmp_path / "broker.log")
            assert policy_hash(stub) == before
            stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-a"))  # "or cancel them first"
            wait_hash(stub, before, timeout=30)  # the same file, now fit to go into force
            status = stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a"))
            assert not status.HasField("refused_policy"), status.refused_policy
    finally:
        broker.stop()
