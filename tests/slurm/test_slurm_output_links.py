"""A Slurm job cannot make the broker read a file for it through its own output file.

The job runs as the site's unprivileged `user`, who must be able to write `output_dir`; the
broker (root here) reads `<output_dir>/<token>.<key>.<job id>.out` for `szb logs` and for the job's log tail.
A job that swaps its output file for a symbolic link to a file only root can read must get
nothing of that file back, through either path.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.base import NotFoundError
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptState, AttemptStatus
from tests.brokerproc import BrokerProcess, stub_for
from tests.slurm.conftest import PARTITIONS, SlurmCluster, Tracker, launch
from tests.slurm.onprem import TERMINAL, auth, until_ended, write_onprem_config
from tests.slurm.test_slurm_gang import gang
from tests.slurm.test_slurm_job_user import slurm_token

pytestmark = pytest.mark.slurm

SECRET = "root-only-secret-6f1d2c"
# The job points its own output file (its stdout, already open) at the broker's secret, then
# writes on to its open descriptor and ends successfully.
SWAP = 'f=$(readlink /proc/$$/fd/1); rm -f "$f"; ln -s "$1" "$f"; echo swapped; sleep 4; echo done'


@pytest.fixture
def broker(slurm_cluster: SlurmCluster) -> Iterator[BrokerProcess]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the job runs as nobody")
    token = slurm_token(slurm_cluster, "nobody")
    env = {**slurm_cluster.env, "SZB_SLURM_USER": "nobody", "SZB_SLURM_TOKEN": token}
    # Outside pytest's root-only tmp folder: nobody must reach output_dir.
    folder = Path(tempfile.mkdtemp(prefix="szb-links-"))
    folder.chmod(0o755)
    config = write_onprem_config(folder / "broker", env, broker_id=f"szb-links-{uuid.uuid4().hex[:8]}")
    out = config.parent / "slurm-output"
    out.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(out, nobody.pw_uid, nobody.pw_gid)  # as the README says: a folder the job user can write
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_a_job_that_links_its_output_file_elsewhere_reads_nothing_of_it(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    spec = job_pb2.JobSpec(name="swapper", command=["/bin/sh", "-c", SWAP, "swap", str(secret)],
                           runtime_estimate=duration_pb2.Duration(seconds=60))
    out = broker.config.parent / "slurm-output"
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
        deadline = time.monotonic() + 60
        while not any(p.is_symlink() for p in out.glob("*.out")):
            job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job
            assert job.state not in TERMINAL and time.monotonic() < deadline, job.message
            time.sleep(0.2)
        read = b"".join(r.chunk.data for r in stub.StreamJobLogs(
            pb.StreamJobLogsRequest(id=job_id), metadata=auth()))
        assert SECRET.encode() not in read, read
        job = until_ended(stub, job_id, deadline)
        read = b"".join(r.chunk.data for r in stub.StreamJobLogs(
            pb.StreamJobLogsRequest(id=job_id), metadata=auth()))
    assert SECRET not in job.log_tail and SECRET not in job.message, (job.log_tail, job.message)
    assert SECRET.encode() not in read, read


def test_a_job_that_leaves_a_fifo_for_its_output_file_still_ends(broker: BrokerProcess) -> None:
    # Opening a FIFO for reading waits for a writer: the broker's status poll (the log tail)
    # and `szb logs` would wait forever, and the job would never end.
    fifo = 'f=$(readlink /proc/$$/fd/1); rm -f "$f"; mkfifo "$f"; echo gone; sleep 2'
    spec = job_pb2.JobSpec(name="fifo", command=["/bin/sh", "-c", fifo],
                           runtime_estimate=duration_pb2.Duration(seconds=60))
    with stub_for(broker.address) as stub:
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
        job = until_ended(stub, job_id, time.monotonic() + 60)
        read = list(stub.StreamJobLogs(pb.StreamJobLogsRequest(id=job_id), metadata=auth(), timeout=30))
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert read == [], read


# The job finds its own token as a job can: the ledger's `<token>.jobid` marker holding its job id;
# then the names of its own files (`<token>.<key>.<job id>`), as its own output file's (the test's
# user lists).
OWN_TOKEN = ('for i in 1 2 3 4 5 6 7 8 9 10; do t=$(grep -lx "$SLURM_JOB_ID *[0-9]*" *.jobid) && break; '
             'sleep 0.5; done; t=${t%.jobid}; '
             't=$(ls | grep -E "^$t[.][0-9a-f]{32}[.]$SLURM_JOB_ID[.]out$"); t=${t%.out}; ')


def test_a_gang_that_leaves_a_fifo_for_a_rank_exit_file_still_ends(slurm: Tracker) -> None:
    # A failed gang's rank exit files (`<token>.<key>.<job id>.rank<N>.rc`) are read to name the rank that
    # failed first: a FIFO among them would block that read, and the status poll, forever.
    adapter = slurm.make(partitions={**PARTITIONS, "cpu": None})
    request = gang(OWN_TOKEN + 'if [ "$RANK" = 0 ]; then mkfifo "$t.rank7.rc"; fi; exit 3')
    backend_id = slurm.submit(request, adapter)
    deadline = time.monotonic() + 60
    polled: list[AttemptStatus] = []

    def poll() -> None:
        polled.append(adapter.status(backend_id))

    while not polled or not polled[-1].state.terminal:
        assert time.monotonic() < deadline, polled[-1]
        time.sleep(0.25)
        reader = threading.Thread(target=poll, daemon=True)
        seen = len(polled)
        reader.start()
        reader.join(timeout=20)
        assert len(polled) > seen, "the status poll is stuck"
    assert polled[-1].state is AttemptState.FAILED, polled[-1]
    assert polled[-1].exit_code == 3, polled[-1]


def test_a_fifo_a_job_leaves_among_the_ledger_markers_blocks_no_lookup(slurm: Tracker) -> None:
    # A job slurmctld no longer lists (purged after MinJobAge, say while the broker was down)
    # is looked up in the `<token>.jobid` markers; a job's FIFO among them would block it forever.
    request = launch(("/bin/sh", "-c", "mkfifo planted.jobid; echo planted"))
    backend_id = slurm.submit(request)
    slurm.wait(backend_id, {AttemptState.SUCCEEDED, AttemptState.FAILED})
    assert (slurm.adapter.output_dir / "planted.jobid").is_fifo()
    fresh = slurm.make()  # a restarted broker: nothing in memory, every answer from the markers
    answers: list[object] = []

    def lookup() -> None:
        try:
            answers.append(fresh.status("99999999"))
        except NotFoundError as exc:
            answers.append(exc)

    reader = threading.Thread(target=lookup, daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert answers, "the lookup is stuck"
    assert isinstance(answers[0], NotFoundError), answers
