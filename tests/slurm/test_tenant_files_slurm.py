"""Another tenant's user can neither read a job's output nor plant its result (held-out review, issue 10).

Every attempt's token is in its job's comment (`squeue -o %k`, any cluster user) and every
tenant's user may create files in `output_dir` (mode 3733). Tenant A's user created B's
`<token>.out` (0666) and `<token>.rc` ("0") before B's job did: B's output went into A's file,
and once slurmctld no longer listed B's job the broker read A's exit code (SUCCEEDED, exit 0).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.slurm import SlurmAdapter
from broker.api import job_pb2
from broker.model import AttemptState
from tests.slurm.conftest import PARTITIONS, SITE, SlurmCluster
from tests.slurm.test_tenant_users_slurm import Stub, Users, broker, ended, submit, users  # noqa: F401

pytestmark = pytest.mark.slurm

# As user a: every token another user's job carries, its .out (0666) and .rc ("0") made first.
PLANTER = textwrap.dedent(r"""
    import os, subprocess, sys, time
    out_dir, me = sys.argv[1], sys.argv[2]
    seen = set()
    while True:
        r = subprocess.run(["squeue", "-h", "-o", "%u|%k"], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            user, _, comment = line.partition("|")
            marks = dict(p.split("=", 1) for p in comment.split(";") if "=" in p)
            tok = marks.get("szb:token")
            if not tok or user == me or tok in seen:
                continue
            seen.add(tok)
            for name, body in ((tok + ".out", b""), (tok + ".rc", b"0\n")):
                path = os.path.join(out_dir, name)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                    os.write(fd, body); os.close(fd); os.chmod(path, 0o666)
                    print("planted", name, flush=True)
                except OSError as exc:
                    print("too late for", name, exc, flush=True)
        time.sleep(0.02)
""")


@pytest.fixture
def planter(broker: tuple[Stub, Path], users: Users, slurm_cluster: SlurmCluster) -> Iterator[list[str]]:  # noqa: F811
    """User a planting other users' files as it finds their tokens; yields the lines it says."""
    _, output_dir = broker
    pw = pwd.getpwnam(users.a)
    squeue = shutil.which("squeue", path=os.environ.get("PATH"))
    assert squeue, "squeue not found"
    env = {"PATH": f"{os.path.dirname(squeue)}:/usr/bin:/bin", "SLURM_CONF": slurm_cluster.env["SLURM_CONF"]}
    # (the system's python: user a may not enter the folder the test's venv is in)
    proc = subprocess.Popen(["/usr/bin/python3", "-c", PLANTER, str(output_dir), users.a], user=pw.pw_uid,
                            group=pw.pw_gid, extra_groups=[], cwd="/", env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    time.sleep(1)  # its first squeue
    try:
        yield said
    finally:
        proc.kill()
        proc.wait()


def b_job_ended_with_planted_files(
    stub: Stub, output_dir: Path, planter: list[str]
) -> tuple[job_pb2.Job, str, str]:
    """B's job (it says a secret, exits 3) run while user a plants; B's job, its token and job id."""
    job = ended(stub, "team-b", submit(stub, "team-b", "sleep 6; echo secret of team-b; exit 3"), 120)
    time.sleep(0.5)
    assert any(line.startswith("planted") for line in planter), planter  # (else nothing was tried)
    markers = [p for p in output_dir.glob("*.jobid") if p.read_text().strip()]
    assert len(markers) == 1, sorted(p.name for p in output_dir.iterdir())
    return job, markers[0].name[: -len(".jobid")], markers[0].read_text().split()[0]


def test_another_tenants_planted_exit_code_is_not_believed(
    broker: tuple[Stub, Path], slurm_cluster: SlurmCluster, planter: list[str],  # noqa: F811
) -> None:
    stub, output_dir = broker
    job, token, backend_id = b_job_ended_with_planted_files(stub, output_dir, planter)
    assert job.state == job_pb2.JOB_STATE_FAILED and job.exit_code == 3, job.message  # Slurm's record
    # A restarted broker under another broker_id: B's job is not its attempt's (as when slurmctld
    # purged it and issued its id again), so the attempt's result comes from its files.
    other = SlurmAdapter(SITE, {"url": slurm_cluster.url, "token": slurm_cluster.token,
                                "user": slurm_cluster.user, "partitions": PARTITIONS,
                                "output_dir": str(output_dir), "broker_id": "szb-someone-else"})
    status = other.status_of(backend_id, token)
    assert status.state is not AttemptState.SUCCEEDED and status.exit_code != 0, status
    own_result = status.state is AttemptState.FAILED and status.exit_code == 3  # from B's own files
    named = status.state is AttemptState.LOST and f"{token}.rc" in status.message  # A's file, named
    assert own_result or named, status


def test_another_tenants_user_cannot_read_a_jobs_output_through_a_file_it_made_first(
    broker: tuple[Stub, Path], users: Users, planter: list[str],  # noqa: F811
) -> None:
    stub, output_dir = broker
    job, token, _ = b_job_ended_with_planted_files(stub, output_dir, planter)
    a = pwd.getpwnam(users.a)
    for path in output_dir.iterdir():  # (user a cannot list the folder; it may know names)
        read = subprocess.run(["cat", str(path)], capture_output=True, text=True, user=a.pw_uid,
                              group=a.pw_gid, extra_groups=[], check=False)
        assert "secret of team-b" not in read.stdout, (path.name, read.stdout)
    assert "secret of team-b" in job.log_tail, job.log_tail  # B's own output, read by the broker
    own = [p.name for p in output_dir.iterdir() if "secret of team-b" in p.read_text(errors="replace")]
    assert len(own) == 1 and own[0].startswith(f"{token}.") and own[0] != f"{token}.out", own


def test_the_script_stops_when_its_output_file_is_there_already(tmp_path: Path) -> None:
    """A file of the job's output's name made first (by another user, say) is never written to."""
    from adapters.slurm._filekey import FileKey
    from adapters.slurm._script import ScriptSettings, batch_script, exit_code_file, output_file
    from tests.slurm.conftest import launch

    settings = ScriptSettings(broker_id="b", output_dir=tmp_path, workdir=str(tmp_path),
                              file_key=FileKey(SITE, tmp_path))
    request = launch(("/bin/sh", "-c", "echo ran"), token="tok7")
    output_file(settings, "tok7", "7").write_text("made first\n")
    run = subprocess.run(["/bin/sh", "-c", batch_script(request, settings)], capture_output=True,
                         text=True, cwd=tmp_path, env={"SLURM_JOB_ID": "7"}, check=False)
    assert run.returncode != 0 and "ran" not in run.stdout, run
    assert output_file(settings, "tok7", "7").read_text() == "made first\n"
    assert not exit_code_file(settings, "tok7", "7").exists()
    output_file(settings, "tok7", "7").unlink()
    run = subprocess.run(["/bin/sh", "-c", batch_script(request, settings)], capture_output=True,
                         text=True, cwd=tmp_path, env={"SLURM_JOB_ID": "7"}, check=False)
    assert run.returncode == 0 and output_file(settings, "tok7", "7").read_text() == "ran\n", run
    assert exit_code_file(settings, "tok7", "7").read_text() == "0\n"


def test_the_file_key_is_the_brokers_own_and_private(tmp_path: Path) -> None:
    from adapters.base import ConfigError
    from adapters.slurm._filekey import KEY_FILE, FileKey

    stem = FileKey(SITE, tmp_path).stem("tok1")
    key = tmp_path / KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    assert FileKey(SITE, tmp_path).stem("tok1") == stem != FileKey(SITE, tmp_path).stem("tok2")  # a restart
    assert stem.startswith("tok1.") and len(stem) == len("tok1.") + 32
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        FileKey(SITE, tmp_path).stem("tok1")
    if os.geteuid() == 0:  # one another user made there first: never used
        key.chmod(0o600)
        os.chown(key, 65534, 65534)
        with pytest.raises(ConfigError, match="not this broker's own"):
            FileKey(SITE, tmp_path).stem("tok1")
