"""Local jobs are sandboxed: a real `szb serve` (two tenants) whose jobs probe their limits.

Each job is a small python3 program that prints what it could see or do; the broker runs
it as the sandbox would for any tenant. Observation 1 of issue 10: a job printed the
broker's environment, read broker.db, listed other attempts' folders and posted `exit 0`
for another tenant's running job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters._sandbox import DEFAULT_JOB_GIDS, Sandbox
from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from broker.model import SiteId
from broker.secret_files import JobAccount
from broker.store import SqliteStore
from tests.brokerproc import JOB_USER, BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.processes import Held, held_or_none

BROKER_SECRET = "broker-own-aws-secret-" + uuid.uuid4().hex
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching to the job user needs root")


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    # A folder anyone may enter, so only the broker's own care keeps jobs out of its data dir.
    folder = Path(tempfile.mkdtemp(prefix="szb-sandbox-"))
    folder.chmod(0o755)
    config = write_broker_config(folder / "b")
    (folder / "b").chmod(0o755)
    proc = BrokerProcess(config, extra_env={"AWS_SECRET_ACCESS_KEY": BROKER_SECRET})
    proc.start()
    yield proc
    proc.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def data_dir(broker: BrokerProcess) -> Path:
    return broker.config.parent / "data"


def run_probe(
    stub: broker_service_pb2_grpc.BrokerServiceStub, code: str, tenant: str = "team-a", **extra: object
) -> dict[str, object]:
    """Run `code` as a job; it prints one JSON object as its last line."""
    job = submit(stub, spec(f"probe-{uuid.uuid4().hex[:8]}", [PY, "-c", code], **extra), tenant=tenant).job
    final = wait_for(stub, job.id, TERMINAL, tenant=tenant)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.log_tail
    result: dict[str, object] = json.loads(final.log_tail.strip().splitlines()[-1])
    return result


def start_sleeper(
    stub: broker_service_pb2_grpc.BrokerServiceStub, tenant: str, setup: str = ""
) -> tuple[job_pb2.Job, Held]:
    """A running job of `tenant` and its process."""
    marker = f"sleeper-{uuid.uuid4().hex}"
    code = f"{setup}\nimport time; time.sleep(120)  # {marker}"
    job = submit(stub, spec("sleeper", [PY, "-c", code]), tenant=tenant).job
    wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING}, tenant=tenant)
    deadline = time.monotonic() + 10
    while True:
        pids = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _cmdline_has(p, marker)
        ]
        if pids:
            return job, Held(pids[0])
        assert time.monotonic() < deadline, "the sleeper's process never appeared"
        time.sleep(0.05)


def _cmdline_has(proc: Path, marker: str) -> bool:
    try:
        return marker.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_a_job_sees_only_the_allow_listed_environment(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    code = "import json, os; print(dict(os.environ)); print(json.dumps(sorted(os.environ)))"
    job = submit(stub, spec("env", [PY, "-c", code], env={"MY_SETTING": "on"})).job
    final = wait_for(stub, job.id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.log_tail
    assert BROKER_SECRET not in final.log_tail
    names = set(json.loads(final.log_tail.strip().splitlines()[-1]))
    assert "AWS_SECRET_ACCESS_KEY" not in names and "MY_SETTING" in names
    # LC_CTYPE: python itself may set it (PEP 538) when LANG is unset.
    allowed = {"PATH", "LANG", "HOME", "TMPDIR", "USER", "LOGNAME", "LC_CTYPE", "MY_SETTING",
               "CUDA_VISIBLE_DEVICES"}
    assert {n for n in names if not n.startswith("SZB_")} <= allowed
    assert {"SZB_JOB_ID", "SZB_ATTEMPT_ID", "SZB_AGENT_TOKEN"} <= names


@ROOT_ONLY
def test_the_jobs_env_never_steers_a_process_running_as_root(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # The dynamic loader obeys LD_* variables in any process that gets them: a root runner
    # started with a job's env would load a tenant's LD_PRELOAD library as root. LD_DEBUG_OUTPUT
    # shows who obeyed, without a compiler: each process writes OUT.<pid>, owned by its user.
    shared = Path(tempfile.mkdtemp(prefix="szb-ld-"))
    shared.chmod(0o1777)
    try:
        env = {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": str(shared / "out")}
        code = "import json, os; print(json.dumps(os.environ.get('LD_DEBUG_OUTPUT')))"
        final = wait_for(stub, submit(stub, spec("ld-env", [PY, "-c", code], env=env)).job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.log_tail
        assert json.loads(final.log_tail.strip().splitlines()[-1]) == str(shared / "out")  # still its own
        owners = {p.name: p.stat().st_uid for p in shared.iterdir()}
        first, last = DEFAULT_JOB_GIDS
        assert owners and all(first <= uid <= last for uid in owners.values()), owners
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_under_systemd_limits_the_root_wrappers_take_nothing_from_the_jobs_env(tmp_path: Path) -> None:
    # systemd-run and setpriv run as root before the job drops to its user (no systemd here,
    # so the plan is checked as built): no loader variables, no tools found on the job's PATH.
    sandbox = Sandbox(SiteId("local"), tmp_path, JobAccount(JOB_USER, 999), (2_000_000_000, 2_000_000_009),
                      "systemd")
    job_env = {"LD_PRELOAD": "/tmp/x.so", "LD_LIBRARY_PATH": "/tmp", "GCONV_PATH": "/tmp",
               "PATH": "/tmp", "MY_SETTING": "on"}
    env = sandbox.environment(tmp_path, job_env, {"SZB_JOB_ID": "j-1"}, {"PATH": "/usr/bin"})
    assert not {"LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH"} & set(env)
    assert env["MY_SETTING"] == "on" and env["SZB_JOB_ID"] == "j-1"
    argv = sandbox.command(["python3", "-c", "pass"], name="a-1", cpus=1, memory_gb=1, gid=2_000_000_000)
    tools = [argv[0], argv[argv.index("--") + 1]]
    assert [Path(t).name for t in tools] == ["systemd-run", "setpriv"]
    assert all(Path(t).is_absolute() for t in tools), tools
    assert {"--reuid=2000000000", "--regid=2000000000"} <= set(argv)  # the attempt's own uid too


@ROOT_ONLY
def test_a_job_runs_under_its_own_id_in_its_own_session_and_private_folder(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    code = (
        "import json, os; st = os.stat(os.getcwd())\n"
        "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),\n"
        "  'groups': os.getgroups(), 'sid': os.getsid(0), 'pgid': os.getpgid(0), 'cwd': os.getcwd(),\n"
        "  'mode': st.st_mode & 0o7777, 'owner': st.st_uid, 'home': os.environ['HOME'],\n"
        "  'user': os.environ['USER']}))"
    )
    seen = run_probe(stub, code)
    # The attempt's private id is its uid and its gid; USER still names the job user.
    first, last = DEFAULT_JOB_GIDS
    assert seen["uid"] == seen["euid"] == seen["gid"]
    assert first <= seen["uid"] <= last  # type: ignore[operator]
    assert seen["user"] == JOB_USER and seen["uid"] != pwd.getpwnam(JOB_USER).pw_uid
    assert seen["groups"] in ([], [seen["gid"]])
    assert broker.proc is not None
    assert seen["sid"] != os.getsid(broker.proc.pid) and seen["pgid"] != os.getpgid(broker.proc.pid)
    assert seen["sid"] == seen["pgid"]  # a session of its own, led by its runner
    assert seen["mode"] == 0o700 and seen["owner"] == seen["uid"]
    cwd = Path(str(seen["cwd"]))
    assert seen["home"] == str(cwd)
    assert data_dir(broker).resolve() not in cwd.parents


@ROOT_ONLY
def test_a_job_reads_neither_the_store_nor_another_tenants_job(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    other, proc = start_sleeper(stub, "team-b", setup="open('secret.txt', 'w').write('team-b private')")
    try:
        other_cwd = Path(os.readlink(f"/proc/{proc.pid}/cwd"))
        targets = {
            "store": str(data_dir(broker) / "broker.db"),
            "data_dir": str(data_dir(broker)),
            "attempt_records": str(data_dir(broker) / "local"),
            "other_folder": str(other_cwd),
            "other_file": str(other_cwd / "secret.txt"),
            "other_guard": str(other_cwd.parent),
            "job_root": str(other_cwd.parent.parent),
            "other_environ": f"/proc/{proc.pid}/environ",
        }
        code = (
            "import json, os\n"
            f"targets = {targets!r}\n"
            "seen = {}\n"
            "for name, path in targets.items():\n"
            "    try:\n"
            "        if os.path.isdir(path):\n"
            "            os.listdir(path)\n"
            "        else:\n"
            "            open(path, 'rb').read(16)\n"
            "        seen[name] = 'read'\n"
            "    except PermissionError:\n"
            "        seen[name] = 'denied'\n"
            "print(json.dumps(seen))"
        )
        seen = run_probe(stub, code, tenant="team-a")
        assert seen == dict.fromkeys(targets, "denied")
        # The folder names carry neither the attempt's token nor its agent secret.
        attempt = _attempts(broker, other.id)[-1]
        names = [p.name for p in (data_dir(broker) / "local").iterdir()] + [other_cwd.parent.name]
        assert not any(attempt.token in n for n in names)
    finally:
        stub.CancelJob(pb.CancelJobRequest(id=other.id), metadata=auth("team-b"))


@ROOT_ONLY
def test_a_job_cannot_signal_another_tenants_job(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # Every job runs as the job user; kill(2) compares uids only, so a private gid alone let
    # team-a's job SIGSTOP or SIGKILL team-b's running job. Only B's own pids are targeted:
    # other brokers' jobs on this host run as the same user.
    flag = Path(tempfile.mkdtemp(prefix="szb-signal-"))
    flag.chmod(0o755)
    wait = (f"import os, time\nopen('marker', 'w').write('started')\n"
            f"while not os.path.exists({str(flag / 'go')!r}): time.sleep(0.1)\nraise SystemExit(0)")
    other, proc = start_sleeper(stub, "team-b", setup=wait)
    try:
        targets = {"pid": proc.pid, "group": -os.getpgid(proc.pid)}
        code = (
            "import json, os, signal\n"
            f"targets = {targets!r}\n"
            "seen = {}\n"
            "for name, target in targets.items():\n"
            "    for sig in (signal.SIGSTOP, signal.SIGKILL):\n"
            "        try:\n"
            "            os.kill(target, sig)\n"
            "            seen[f'{name}-{sig.name}'] = 'sent'\n"
            "        except PermissionError:\n"
            "            seen[f'{name}-{sig.name}'] = 'denied'\n"
            "print(json.dumps(seen))"
        )
        seen = run_probe(stub, code, tenant="team-a")
        assert set(seen.values()) == {"denied"}, seen
        current = stub.GetJob(pb.GetJobRequest(id=other.id), metadata=auth("team-b")).job
        assert current.state == job_pb2.JOB_STATE_RUNNING, current.log_tail
        (flag / "go").write_text("")
        final = wait_for(stub, other.id, TERMINAL, tenant="team-b")
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED, (final.exit_code, final.log_tail)
    finally:
        stub.CancelJob(pb.CancelJobRequest(id=other.id), metadata=auth("team-b"))
        shutil.rmtree(flag, ignore_errors=True)


@ROOT_ONLY
def test_a_process_a_finished_job_left_behind_cannot_signal_a_later_job(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # team-a's job starts a process of its own session and ends; that process must not stop
    # team-b's job that starts afterwards. (It used to outlive the job under the job's uid, its
    # kill refused by the uids; it is now killed when its job ends, so it never even tries.)
    shared = Path(tempfile.mkdtemp(prefix="szb-left-"))
    shared.chmod(0o1777)
    target, report, go = shared / "target", shared / "report", shared / "go"
    left = (
        "import json, os, signal, time\n"
        f"open({str(shared / 'left.pid')!r}, 'w').write(str(os.getpid()))\n"
        f"while not os.path.exists({str(target)!r}): time.sleep(0.1)\n"
        f"pid = int(open({str(target)!r}).read())\n"
        "try:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "    seen = 'sent'\n"
        "except PermissionError:\n"
        "    seen = 'denied'\n"
        f"open({str(report)!r} + '.tmp', 'w').write(seen)\n"
        f"os.replace({str(report)!r} + '.tmp', {str(report)!r})\n"
    )
    starter = (
        "import subprocess\n"
        f"subprocess.Popen([{PY!r}, '-c', {left!r}], start_new_session=True, stdin=subprocess.DEVNULL,\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"import os, time\n"
        f"while not os.path.exists({str(shared / 'left.pid')!r}): time.sleep(0.05)\n"
        "print('{}')"
    )
    other, left = None, None
    try:
        run_probe(stub, starter, tenant="team-a")  # returns once the left-behind process wrote its pid
        left = held_or_none(int((shared / "left.pid").read_text()))
        wait = (f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.1)\n"
                "raise SystemExit(0)")
        other, proc = start_sleeper(stub, "team-b", setup=wait)
        target.write_text(str(proc.pid))
        assert left is None or left.wait_gone(30), "the left-behind process outlived its job"
        assert not report.exists() or report.read_text() == "denied"
        go.write_text("")
        final = wait_for(stub, other.id, TERMINAL, tenant="team-b")
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED, (final.exit_code, final.log_tail)
    finally:
        if left is not None:
            left.kill()
        if other is not None:
            stub.CancelJob(pb.CancelJobRequest(id=other.id), metadata=auth("team-b"))
        shutil.rmtree(shared, ignore_errors=True)


def test_memory_and_cpu_limits_come_from_the_request(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    code = (
        "import json, os\n"
        "try:\n"
        "    block = bytearray(1024 ** 3)\n"
        "    memory = 'unlimited'\n"
        "except MemoryError:\n"
        "    memory = 'limited'\n"
        "print(json.dumps({'memory': memory, 'cores': len(os.sched_getaffinity(0))}))"
    )
    job = spec("limits", [PY, "-c", code])
    job.resources.memory_gb = 0.25
    job.resources.cpus = 1
    final = wait_for(stub, submit(stub, job).job.id, TERMINAL)
    if final.state == job_pb2.JOB_STATE_SUCCEEDED:
        seen = json.loads(final.log_tail.strip().splitlines()[-1])
        assert seen["memory"] == "limited"
        if not Path("/run/systemd/system").is_dir():  # setrlimit + affinity: one core
            assert seen["cores"] == 1
    else:  # a cgroup's OOM killer ended it instead
        assert final.exit_code == 137, final.log_tail


# Agent secrets -------------------------------------------------------------------------


def _attempts(broker: BrokerProcess, job_id: str) -> list:  # type: ignore[type-arg]
    store = SqliteStore(data_dir(broker) / "broker.db")
    try:
        return store.attempts_for(job_id)  # type: ignore[arg-type]
    finally:
        store.close()


def _post(url: str, secret: str, body: dict[str, object]) -> tuple[int, str]:
    req = urllib.request.Request(
        url + "/v1/agent/report",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _secret_of(pid: int) -> tuple[str, str]:
    """(agent endpoint, agent secret) from the job process's own environment (we are root)."""
    env = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
    )
    return env["SZB_AGENT_ENDPOINT"], env["SZB_AGENT_TOKEN"]


@ROOT_ONLY
def test_a_forged_report_for_another_tenants_job_is_refused_uniformly(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    victim, _proc = start_sleeper(stub, "team-b")
    try:
        attempt = _attempts(broker, victim.id)[-1]
        # The attacker knows the victim's attempt id and its idempotency token (tags, Slurm
        # comments and file names carry it) and holds a valid secret of its own.
        code = (
            "import json, os, urllib.request, urllib.error\n"
            "def post(attempt, secret):\n"
            "    body = json.dumps({'attempt_id': attempt, 'kind': 'exit', 'exit_code': 0,\n"
            "                       'log_tail': 'forged'}).encode()\n"
            "    req = urllib.request.Request(os.environ['SZB_AGENT_ENDPOINT'] + '/v1/agent/report',\n"
            "        data=body, headers={'content-type': 'application/json',\n"
            "                            'authorization': 'Bearer ' + secret})\n"
            "    try:\n"
            "        with urllib.request.urlopen(req, timeout=10) as r:\n"
            "            return [r.status, r.read().decode()]\n"
            "    except urllib.error.HTTPError as e:\n"
            "        return [e.code, e.read().decode()]\n"
            "own = os.environ['SZB_AGENT_TOKEN']\n"
            f"victim = {attempt.id!r}\n"
            "print(json.dumps({\n"
            "  'own_secret': post(victim, own),\n"
            f"  'token': post(victim, {attempt.token!r}),\n"
            "  'guess': post(victim, 'x' * 43),\n"
            "  'unknown_attempt': post(victim + '9', own),\n"
            "}))"
        )
        answers = run_probe(stub, code, tenant="team-a")
        assert {tuple(a) for a in answers.values()} == {(401, '{"error": "unauthenticated"}')}  # type: ignore[arg-type]
        with grpc.insecure_channel(broker.address) as channel:
            agent = agent_service_pb2_grpc.AgentServiceStub(channel)
            details = set()
            for attempt_id, secret in ((attempt.id, attempt.token), (attempt.id + "9", attempt.token)):
                with pytest.raises(grpc.RpcError) as err:
                    agent.ReportExit(agent_service_pb2.ReportExitRequest(
                        attempt_id=attempt_id, token=secret, exit_code=0))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                details.add(err.value.details())
            assert len(details) == 1
        time.sleep(1.0)  # a few dispatch passes
        assert stub.GetJob(pb.GetJobRequest(id=victim.id), metadata=auth("team-b")).job.state == (
            job_pb2.JOB_STATE_RUNNING
        )
    finally:
        stub.CancelJob(pb.CancelJobRequest(id=victim.id), metadata=auth("team-b"))


@ROOT_ONLY
def test_exit_codes_are_int32_and_a_bad_report_changes_nothing(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    job, proc = start_sleeper(stub, "team-b")
    try:
        endpoint, secret = _secret_of(proc.pid)
        status, body = _post(endpoint, secret, {"attempt_id": _attempts(broker, job.id)[-1].id,
                                                "kind": "exit", "exit_code": 10**30})
        assert status == 400 and "exit_code" in body
        attempt = _attempts(broker, job.id)[-1]
        assert attempt.state.value == "RUNNING"
        current = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-b")).job
        assert current.state == job_pb2.JOB_STATE_RUNNING
        # The real agent, with the real secret, is still heard.
        status, _ = _post(endpoint, secret, {"attempt_id": attempt.id, "kind": "exit", "exit_code": 7,
                                             "log_tail": "bye"})
        assert status == 200
        final = wait_for(stub, job.id, TERMINAL, tenant="team-b")
        assert final.state == job_pb2.JOB_STATE_FAILED and final.exit_code == 7
    finally:
        proc.kill()  # the broker stops it once its job ended
    # Where the secret lives: the job's environment only. The store has its hash.
    assert attempt.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret != attempt.token
    for path in data_dir(broker).glob("broker.db*"):
        assert secret.encode() not in path.read_bytes(), path
    history = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=auth("team-b"), timeout=10))
    assert history and all(secret not in str(r.event) for r in history)
    assert secret not in (broker.config.parent / "broker.log").read_text()
    assert secret not in "".join(broker.output)


@ROOT_ONLY
def test_the_agent_of_a_superseded_attempt_is_told_to_stop(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    # Attempt 1 is lost (its runner killed) while its job process lives on; the job is requeued
    # and runs as attempt 2. Attempt 1's agent still holds a valid secret: its reports must tell
    # it to stop, or two copies of the job run at once.
    job, proc = start_sleeper(stub, "team-b")
    try:
        endpoint, secret = _secret_of(proc.pid)
        first = _attempts(broker, job.id)[-1]
        os.kill(int(Path(f"/proc/{proc.pid}/stat").read_text().split()[3]), signal.SIGKILL)  # its runner
        deadline = time.monotonic() + 30
        while len(_attempts(broker, job.id)) < 2 or _attempts(broker, job.id)[0].state.value != "LOST":
            assert time.monotonic() < deadline, _attempts(broker, job.id)
            time.sleep(0.1)
        assert stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-b")).job.state not in TERMINAL
        status, body = _post(endpoint, secret, {"attempt_id": first.id, "kind": "heartbeat"})
        assert (status, json.loads(body)) == (200, {"stop": True})
        with grpc.insecure_channel(broker.address) as channel:
            agent = agent_service_pb2_grpc.AgentServiceStub(channel)
            beat = agent.Heartbeat(agent_service_pb2.HeartbeatRequest(
                attempt_id=first.id, token=secret, running=True))
        assert beat.stop
        # A late exit report of the superseded attempt changes nothing either.
        assert _post(endpoint, secret, {"attempt_id": first.id, "kind": "exit", "exit_code": 0})[0] == 200
        current = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-b")).job
        assert current.state not in TERMINAL and current.attempts == 2
    finally:
        proc.kill()
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-b"))


@ROOT_ONLY
def test_a_link_planted_where_the_default_job_root_goes_is_not_followed(tmp_path: Path) -> None:
    # The default job_root is `$TMPDIR/szb-jobs-<hash of the data dir>`: a predictable name in a
    # folder everyone may write (after a reboot empties /tmp, before the broker first starts).
    # Another user's symbolic link there must not have root chmod its target and fill it.
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    config = write_broker_config(tmp_path / "b")
    digest = hashlib.sha256(str((config.parent / "data").resolve()).encode()).hexdigest()[:10]
    planted = shared_tmp / f"szb-jobs-{digest}"
    planted.symlink_to(victim)
    nobody = pwd.getpwnam("nobody")
    os.lchown(planted, nobody.pw_uid, nobody.pw_gid)
    proc = BrokerProcess(config, extra_env={"TMPDIR": str(shared_tmp)})
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec("planted", ["true"]), tenant="team-a").job
            time.sleep(1.0)  # a few dispatch passes
            state = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job.state
    finally:
        proc.stop()
    assert victim.stat().st_mode & 0o777 == 0o700
    assert list(victim.iterdir()) == []
    assert state != job_pb2.JOB_STATE_SUCCEEDED
    assert f"job_root {planted} is a symbolic link" in "".join(proc.output), "".join(proc.output)


@ROOT_ONLY
def test_a_local_job_cannot_fill_the_brokers_disk_through_the_agent_log(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    # Cloud bootstraps post their output in chunks, kept under the data dir (64 MiB per attempt).
    # A local job's output is read from its own file; chunks its agent secret posts are not
    # needed and must not be kept, or every running job could write 64 MiB into the data dir.
    job, proc = start_sleeper(stub, "team-b")
    try:
        endpoint, secret = _secret_of(proc.pid)
        attempt = _attempts(broker, job.id)[-1]
        chunk = base64.b64encode(b"x" * 32768).decode()
        for offset in range(0, 4 * 32768, 32768):
            req = urllib.request.Request(
                endpoint + "/v1/agent/log",
                data=json.dumps({"attempt_id": attempt.id, "offset": offset, "data": chunk}).encode(),
                headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
        kept = data_dir(broker) / "agent-logs" / f"{attempt.id}.log"
        assert not kept.exists(), kept.stat().st_size
        out = b"".join(r.chunk.data for r in stub.StreamJobLogs(
            pb.StreamJobLogsRequest(id=job.id), metadata=auth("team-b"), timeout=10))
        assert b"xxxx" not in out
    finally:
        proc.kill()
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-b"))


@ROOT_ONLY
def test_a_local_job_that_reports_its_own_exit_runs_no_further(tmp_path: Path) -> None:
    # A local job holds its attempt's agent secret. Reporting `exit 0` ends the job (the
    # tenant's own word), but its process must stop with it, not run on outside the broker's
    # accounting until a reconcile pass (here an hour away) finds it.
    folder = Path(tempfile.mkdtemp(prefix="szb-selfreport-"))
    folder.chmod(0o755)
    config = write_broker_config(folder / "b")
    text = config.read_text()
    config.write_text(text.replace("dispatch: {poll_interval_s: 0.2}",
                                   "dispatch: {poll_interval_s: 0.2, reconcile_interval_s: 3600}"))
    proc = BrokerProcess(config)
    proc.start()
    sleeper = None
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job, sleeper = start_sleeper(stub, "team-a")
            endpoint, secret = _secret_of(sleeper.pid)
            attempt = _attempts(proc, job.id)[-1]
            status, body = _post(endpoint, secret, {"attempt_id": attempt.id, "kind": "exit",
                                                    "exit_code": 0, "log_tail": "all done"})
            assert (status, json.loads(body)) == (200, {"stop": True})
            final = wait_for(stub, job.id, TERMINAL, tenant="team-a")
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED
            assert sleeper.wait_gone(30), "the job's process still runs after its job ended"
    finally:
        if sleeper is not None:
            sleeper.kill()
        proc.stop()
        shutil.rmtree(folder, ignore_errors=True)


@ROOT_ONLY
def test_an_agent_chunk_past_any_offset_and_a_bad_rank_are_invalid_argument(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    """Review: a chunk at offset 2^63-1 answered INTERNAL (the next offset overflowed int64), with
    a traceback in the log, and over HTTP offset 10^30 was acknowledged; a report with a rank the
    job has not carried ErrorInfo reason INTERNAL under code INVALID_ARGUMENT."""
    job, proc = start_sleeper(stub, "team-b")
    try:
        endpoint, secret = _secret_of(proc.pid)
        attempt = _attempts(broker, job.id)[-1]
        with grpc.insecure_channel(broker.address) as channel:
            agent = agent_service_pb2_grpc.AgentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                agent.AppendLog(agent_service_pb2.AppendLogRequest(
                    attempt_id=attempt.id, token=secret, offset=2**63 - 1, data=b"xy"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert "offset" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                agent.ReportExit(agent_service_pb2.ReportExitRequest(
                    attempt_id=attempt.id, token=secret, exit_code=0, rank=5))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            info = rpc_status.from_call(err.value)
            assert info is not None
            reasons = [d for d in info.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
            unpacked = error_details_pb2.ErrorInfo()
            reasons[0].Unpack(unpacked)
            assert unpacked.reason == "INVALID_ARGUMENT"
        req = urllib.request.Request(
            endpoint + "/v1/agent/log",
            data=json.dumps({"attempt_id": attempt.id, "offset": 10**30, "data": "eHk="}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 400 and "offset" in refused.value.read().decode()
        assert stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-b")).job.state == (
            job_pb2.JOB_STATE_RUNNING
        )
    finally:
        proc.kill()
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-b"))
    assert "Traceback" not in "".join(broker.output)


@ROOT_ONLY
def test_no_setuid_program_raises_a_jobs_privileges(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    """Review: a setuid copy of a shell one job left in /tmp ran a later job as the first job's
    (reused) uid, which read the other tenant's secrets. Jobs run with no_new_privs set."""
    code = (
        "import json\n"
        "lines = open('/proc/self/status').read().splitlines()\n"
        "flags = dict(line.split(':\\t', 1) for line in lines if ':\\t' in line)\n"
        "print(json.dumps({'no_new_privs': flags['NoNewPrivs'].strip()}))"
    )
    assert run_probe(stub, code)["no_new_privs"] == "1"


@ROOT_ONLY
def test_what_a_job_left_in_shared_temporary_folders_goes_with_it(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    """What a job writes outside its folder keeps its private uid, which a later job gets again:
    the broker removes it when the attempt ends."""
    name = f"szb-left-{uuid.uuid4().hex}"
    code = (
        "import json, os\n"
        f"for d in ('/tmp', '/dev/shm'): open(os.path.join(d, '{name}'), 'w').write('secret')\n"
        f"os.mkdir('/tmp/{name}.d'); open('/tmp/{name}.d/x', 'w').write('secret')\n"
        "print(json.dumps({'uid': os.getuid()}))"
    )
    run_probe(stub, code)
    made = (Path("/tmp") / name, Path("/dev/shm") / name, Path("/tmp") / f"{name}.d")
    left = [p for p in made if p.exists()]
    assert not left, left


@ROOT_ONLY
def test_a_job_killed_after_its_grace_leaves_its_folder_sealed(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    """Review: a job that ignored SIGTERM was killed with its runner at the end of the cancel's
    grace, and its folder stayed its own: the next job given its uid read its checkpoint."""
    ignore_term = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    job, held = start_sleeper(stub, "team-a", setup=ignore_term)
    work = Path(os.readlink(f"/proc/{held.pid}/cwd"))
    assert work.parent.stat().st_gid != 0  # open to the job's group while it runs
    stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-a"))
    wait_for(stub, job.id, {job_pb2.JOB_STATE_CANCELLED})
    deadline = time.monotonic() + 30
    while (st := work.parent.stat()).st_gid != 0:
        assert time.monotonic() < deadline, (st.st_gid, oct(st.st_mode))
        time.sleep(0.2)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o700)
