"""A scheduler elected after another counts the local jobs its predecessor started.

Found by an HA review: two schedulers on one host share the local site's data dir; the standby's
executor read the attempts' folders only when it booted, so after a takeover it counted none of
the jobs the old leader had started since, and placed queued jobs on their GPUs (7 jobs RUNNING
on 4 A800, two per slot, `szb status` saying 1 of 4 free). The elected scheduler's first
reconciliation lists the site, and that listing now takes in what runs there.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from adapters.base import TransientError
from adapters.local import LocalAdapter
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptId, JobId, JobSpec, LaunchRequest, Offer, SiteId
from tests.brokerproc import JOB_PYTHON, ROOT
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.ha.conftest import LEASE_S, Cluster
from tests.processes import kill_runner_groups, runners_under

SITE = SiteId("local")
OFFER = Offer(site=SITE, instance_type="local-A800", accelerator="A800", count=1, price_per_hour=14.0)


def request(n: int) -> LaunchRequest:
    spec = JobSpec.model_validate({
        "name": f"gpu-{n}", "command": [JOB_PYTHON, "-c", "import time; time.sleep(60)"],
        "runtime_estimate": timedelta(minutes=10), "resources": {"accelerators": {"count": 1}},
    })
    return LaunchRequest(job_id=JobId(f"j-{n}"), attempt_id=AttemptId(f"j-{n}-a1"), token=f"tok-{n}",
                         spec=spec, offer=OFFER)


def test_an_elected_standby_counts_the_slots_its_predecessor_filled(tmp_path: Path) -> None:
    config = {"data_dir": str(tmp_path / "data"), "accelerators": {"A800": 4}, "cancel_grace_s": 0.5}
    standby = LocalAdapter(SITE, config)  # booted first, while the other led
    leader = LocalAdapter(SITE, config)
    started = [leader.submit(request(n)) for n in range(3)]
    try:
        # The leader is gone (its jobs run on); the standby's term begins with a reconciliation.
        owned = {o.backend_id for o in standby.list_owned()}
        assert set(started) <= owned
        [a800] = [p for p in standby.capacity(datetime.now(UTC)).partitions if p.name == "A800"]
        assert a800.free == 1
        held = {slot for token in started for slot in leader._live[token]["slots"]}
        fourth = standby.submit(request(3))
        started.append(fourth)
        assert set(standby._live[fourth]["slots"]).isdisjoint(held)  # the free GPU, not a used one
    finally:
        for token in started:
            standby.cancel(token, token)


def started(stub: broker_service_pb2_grpc.BrokerServiceStub, ids: list[str]) -> int:
    """How many of the jobs hold GPUs (sent to the site and not ended)."""
    states = [stub.GetJob(pb.GetJobRequest(id=i), metadata=auth("team-a")).job.state for i in ids]
    return sum(s in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING) for s in states)


def test_after_a_takeover_no_more_jobs_run_than_the_site_has_gpus(cluster: Cluster) -> None:
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.start("scheduler")  # both booted before any job: the standby saw none of them
    old = cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        sleeper = [JOB_PYTHON, "-c", "import time; time.sleep(600)"]
        ids = [submit(stub, spec(f"gpu-{n}", sleeper, gpus=1)).job.id for n in range(7)]
        try:
            deadline = time.monotonic() + 60
            while started(stub, ids) < 4:  # the site's 4 A800; 3 queue
                assert time.monotonic() < deadline, "the first 4 never started"
                time.sleep(0.2)
            old.kill()
            cluster.leader(timeout=60)
            # The new leader acts once the old lease ran out, then places what it thinks fits.
            seen, until = [], time.monotonic() + LEASE_S * 3 + 5
            while time.monotonic() < until:
                seen.append(started(stub, ids))
                time.sleep(0.2)
            assert max(seen) == 4, f"jobs holding GPUs after the takeover: {seen}"
        finally:
            for job_id in ids:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("team-a"))
            for job_id in ids:
                wait_for(stub, job_id, TERMINAL, timeout=60)


IN_CREATE = 0x100
LEADER = """
import json, sys
from adapters.local import LocalAdapter
from tests.ha.test_local_takeover_slots import SITE, request
adapter = LocalAdapter(SITE, json.loads(sys.argv[1]))
sys.stdin.read(1)  # go: the test watches the attempts' folder by now
print(adapter.submit(request(int(sys.argv[2]))), flush=True)
"""


def paused_in_launch(config: dict[str, object], n: int) -> subprocess.Popen[str]:
    """A leader process launching attempt `j-n-a1`, SIGSTOPped the moment its folder appears
    (inotify: the rest of its launch, the private id picked and the runner spawned, takes
    far longer than the stop)."""
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(os.O_CLOEXEC)
    assert watch >= 0 and libc.inotify_add_watch(watch, str(config["data_dir"]).encode() + b"/local",
                                                 IN_CREATE) >= 0
    leader = subprocess.Popen([sys.executable, "-c", LEADER, json.dumps(config), str(n)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert leader.stdin is not None
        time.sleep(1.0)  # (its start-up, out of the way: nothing is created in the folder before go)
        leader.stdin.write("g")
        leader.stdin.flush()
        os.read(watch, 4096)  # the attempt's folder was made
        leader.send_signal(signal.SIGSTOP)
    finally:
        os.close(watch)
    return leader


def test_a_leader_paused_inside_a_launch_starts_no_second_runner_after_the_next_leader_resumed_it(
    tmp_path: Path,
) -> None:
    """Found by a held-out HA review: paused after its lease check, inside the launch, a leader
    is replaced; the new leader resumes the launch (same attempt, same folder) and starts it;
    the old one, resumed, spawned a second runner of the same attempt: the job ran twice."""
    config = {"data_dir": str(tmp_path / "data"), "accelerators": {"A800": 4}, "cancel_grace_s": 0.5}
    standby = LocalAdapter(SITE, config)
    folder = tmp_path / "data" / "local"
    caught = False
    try:
        for n in range(20, 26):  # until the stop lands before the old leader's runner started
            old = paused_in_launch(config, n)
            caught = not runners_under(folder / f"j-{n}-a1")
            try:
                name = standby.submit(request(n))  # the next leader resumes the launch
            except TransientError:
                name = None  # the old leader is starting it: it is left to finish
            old.send_signal(signal.SIGCONT)
            assert old.communicate(timeout=60)[0].strip() == f"j-{n}-a1"
            name = name or standby.submit(request(n))  # tried again: finds it started
            assert len(runners_under(folder / name)) == 1, f"attempt {name} has two runners"
            if caught:
                break
        assert caught, "no stop landed inside a launch"
    finally:
        kill_runner_groups(list(runners_under(folder)))
