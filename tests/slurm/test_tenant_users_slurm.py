"""Each tenant's Slurm jobs run as its own Unix user (`tenants[].batch.user`).

Before, every tenant's jobs ran as the site's one `user`: a job of one tenant could read
another's output files in the shared `output_dir`, its environment (the attempt's agent
secret) through /proc and signal its processes, since all shared a uid. Now a tenant with a
`batch.user` has its jobs submitted with a JWT minted for that user: Slurm runs them as it,
their files are private (umask 027), and the broker stops them as their owner when the
site's user may not. A user the cluster does not know (Slurm would run the job as nobody)
fails the job, naming `batch.user`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from tests.brokerproc import BrokerProcess, copy_hardware_files, stub_for
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, TERMINAL

pytestmark = pytest.mark.slurm

Stub = broker_service_pb2_grpc.BrokerServiceStub
TOKENS = {t: f"token-{t}-0123456789" for t in ("team-a", "team-b", "team-u")}

POLICY = """\
version: 1
currency: CNY
objective: {{price: 1.0, wait_hour_cost: 40}}
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: {site}
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: cpu, price_hour: 0.5, cpus_per_node: 16, nodes: 2}}
    adapter_config: {adapter_config}
tenants:
  - {{id: team-a, kind: university, entity_country: CN, batch: {{user: {user_a}}}}}
  - {{id: team-b, kind: university, entity_country: CN, batch: {{user: {user_b}}}}}
  - {{id: team-u, kind: university, entity_country: CN, batch: {{user: {user_u}}}}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""


@dataclass
class Users:
    site: str
    a: str
    b: str


@pytest.fixture
def users() -> Iterator[Users]:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("making the tenants' Unix users needs root and useradd")
    tag = uuid.uuid4().hex[:6]
    made = Users(site=f"szbt{tag}s", a=f"szbt{tag}a", b=f"szbt{tag}b")
    for name in (made.site, made.a, made.b):
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
    try:
        yield made
    finally:
        for name in (made.site, made.a, made.b):
            subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, users: Users, tmp_path: Path) -> Iterator[tuple[Stub, Path]]:
    """A broker whose Slurm site mints its tokens (no fixed one) and runs as an unprivileged user."""
    copy_hardware_files(tmp_path)
    # The nodes' users must reach it: not under pytest's own folders (mode 0700).
    output_dir = Path(tempfile.mkdtemp(prefix="szb-users-", dir=os.environ.get("SZB_TEST_RUN_DIR")))
    output_dir.chmod(0o3733)  # as the README says: anyone may write, nobody but its owner lists
    adapter_config = {
        "url": slurm_cluster.env["SZB_SLURM_URL"], "user": users.site, "output_dir": str(output_dir),
        "broker_id": f"szb-users-{uuid.uuid4().hex[:8]}", "timeout_s": 3,
        "slurm_conf": slurm_cluster.env["SLURM_CONF"],
    }
    (tmp_path / "policy.yaml").write_text(POLICY.format(
        site=SITE, adapter_config=json.dumps(adapter_config), user_a=users.a, user_b=users.b,
        user_u=f"szbt-nobody-{uuid.uuid4().hex[:6]}",
    ))
    (tmp_path / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
    )
    (tmp_path / "broker.yaml").write_text(textwrap.dedent("""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {poll_interval_s: 0.2, reconcile_interval_s: 5.0}
        """))
    proc = BrokerProcess(tmp_path / "broker.yaml")
    proc.start()
    try:
        with stub_for(proc.address) as stub:
            yield stub, output_dir
    finally:
        proc.stop()
        shutil.rmtree(output_dir, ignore_errors=True)


def submit(stub: Stub, tenant: str, script: str) -> str:
    spec = job_pb2.JobSpec(name=f"{tenant}-job", command=["/bin/sh", "-c", script],
                           runtime_estimate=duration_pb2.Duration(seconds=600))
    auth = (("authorization", f"Bearer {TOKENS[tenant]}"),)
    return stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth).job.id


def job_of(stub: Stub, tenant: str, job_id: str) -> job_pb2.Job:
    auth = (("authorization", f"Bearer {TOKENS[tenant]}"),)
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth).job


def ended(stub: Stub, tenant: str, job_id: str, within_s: float = 90) -> job_pb2.Job:
    deadline = time.monotonic() + within_s
    while (job := job_of(stub, tenant, job_id)).state not in TERMINAL:
        assert time.monotonic() < deadline, job.message
        time.sleep(0.2)
    return job


def squeue_users(cluster: SlurmCluster) -> str:
    out = subprocess.run(["squeue", "--noheader", "--format=%j %u %T"], env={**os.environ, **cluster.env},
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout


def test_a_tenants_job_runs_as_its_user_and_another_tenants_job_cannot_read_its_output(
    broker: tuple[Stub, Path], users: Users
) -> None:
    stub, output_dir = broker
    a = ended(stub, "team-a", submit(stub, "team-a", "id -un; echo secret of team-a"))
    assert a.state == job_pb2.JOB_STATE_SUCCEEDED, a.message
    assert f"{users.a}\nsecret of team-a" in a.log_tail, a.log_tail
    written = [p for p in output_dir.glob("*.out") if "secret of team-a" in p.read_text()]
    assert len(written) == 1, sorted(p.name for p in output_dir.iterdir())
    assert written[0].stat().st_mode & 0o007 == 0, oct(written[0].stat().st_mode)  # nothing for others
    b = ended(stub, "team-b", submit(stub, "team-b", f"id -un; cat {written[0]}"))
    assert b.state == job_pb2.JOB_STATE_FAILED, b.message
    assert users.b in b.log_tail and "Permission denied" in b.log_tail, b.log_tail
    assert "secret of team-a" not in b.log_tail, b.log_tail


def test_a_tenants_job_is_cancelled_though_the_sites_user_may_not_stop_it(
    broker: tuple[Stub, Path], users: Users, slurm_cluster: SlurmCluster
) -> None:
    stub, _ = broker
    job_id = submit(stub, "team-a", "echo started; sleep 300")
    deadline = time.monotonic() + 60
    while job_of(stub, "team-a", job_id).state != job_pb2.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline, job_of(stub, "team-a", job_id).message
        time.sleep(0.2)
    assert f" {users.a} RUNNING" in squeue_users(slurm_cluster)
    auth = (("authorization", f"Bearer {TOKENS['team-a']}"),)
    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth)
    job = ended(stub, "team-a", job_id)
    assert job.state == job_pb2.JOB_STATE_CANCELLED, job.message
    deadline = time.monotonic() + 30
    while f" {users.a} " in squeue_users(slurm_cluster):  # gone from Slurm, not only from the broker
        assert time.monotonic() < deadline, squeue_users(slurm_cluster)
        time.sleep(0.5)


def test_a_user_the_cluster_does_not_know_fails_the_job_naming_batch_user(
    broker: tuple[Stub, Path], slurm_cluster: SlurmCluster
) -> None:
    stub, _ = broker
    job_id = submit(stub, "team-u", "id -un")
    job = ended(stub, "team-u", job_id)
    assert job.state == job_pb2.JOB_STATE_FAILED, job.message
    assert "tenants[].batch.user" in job.message and "szbt-nobody-" in job.message, job.message
    assert job_id not in squeue_users(slurm_cluster)  # cancelled, not left to run as nobody
