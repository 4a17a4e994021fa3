"""How the local executor starts one attempt: the job's folder, environment and limits, then its runner."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adapters._local_records import read_int
from adapters._sandbox import DEFAULT_PATH, Sandbox, pick_cores
from adapters.base import NO_IMAGES as NO_IMAGES  # (said where `adapters.local` reads it)
from adapters.base import TransientError
from broker.model import LaunchRequest, SiteId

LAUNCH_LOCK = "launch.lock"
"""In an attempt's folder: held (flock) by the process starting that attempt."""


@contextmanager
def launch_claim(site: SiteId, path: Path) -> Iterator[None]:
    """This process's claim on starting the attempt whose folder is `path` (made here, 0700).

    Scheduler candidates on one host share the data dir (HA). A leader paused inside a launch,
    after its lease check, is replaced; the new leader resumes that launch (same attempt, same
    folder), and the old one, resumed, went on to start a second runner: the job ran twice. An
    flock is released when its holder dies, so a SIGKILLed leader leaves nothing to clean; while
    another live process holds it the launch is refused as transient and tried again, and then
    finds the attempt started. Raises TransientError while another process holds the claim.
    """
    path.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path / LAUNCH_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransientError(
                site, "LaunchInProgress", f"another process is starting local attempt {path.name}"
            ) from None
        yield
    finally:
        os.close(fd)


def prepare_launch(
    sandbox: Sandbox, root: Path, host_cores: list[int],
    request: LaunchRequest,
    path: Path,
    slots: list[int],
    live: list[dict[str, Any]],
    max_output_bytes: int,
) -> dict[str, Any]:
    """Prepare the job's folder and the runner's plan; returns the attempt's record."""
    spec = request.spec
    cursor = read_int(root / "next_gid", sandbox.gids[0])
    gid = sandbox.pick_gid({int(m["gid"]) for m in live if m.get("gid")}, cursor)
    if gid is not None:
        (root / "next_gid").write_text(str(gid + 1))
    guard, work = sandbox.workdir(path.name, gid)
    busy: dict[int, int] = {}
    for m in live:
        for core in m.get("cores", ()):
            busy[core] = busy.get(core, 0) + 1
    cores = pick_cores(spec.resources.cpus, busy, host_cores)
    broker_vars = {
        "SZB_JOB_ID": request.job_id,
        "SZB_ATTEMPT_ID": request.attempt_id,
        "SZB_WORKDIR": str(work),
        "SZB_AGENT_ENDPOINT": request.agent_endpoint,
        "SZB_AGENT_TOKEN": request.agent_token,
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, slots)),
        **request.resume_vars(),
    }
    env = sandbox.environment(work, spec.env, broker_vars, os.environ)
    drop = sandbox.user is not None and sandbox.limits == "rlimit"
    plan = {
        "argv": sandbox.command(spec.command, name=path.name, cpus=spec.resources.cpus,
                                     memory_gb=spec.resources.memory_gb, gid=gid),
        "cwd": str(work),
        "uid": gid if drop else None,  # the attempt's private id: no uid shared with another job
        "gid": gid if drop else None,
        "rlimits": sandbox.rlimits(spec.resources.memory_gb),
        "cores": cores if sandbox.limits == "rlimit" else None,
        "seal": str(guard) if sandbox.user is not None else None,
        "max_output_bytes": max_output_bytes,
    }
    (path / "launch.json").write_text(json.dumps(plan))
    return {
        "env": env,
        "pid": None,
        "job_id": request.job_id,
        "attempt_id": request.attempt_id,
        "token": request.token,
        "accelerator": request.offer.accelerator if spec.accelerator_count else None,
        "slots": slots,
        "cpus": spec.resources.cpus,
        "memory_gb": spec.resources.memory_gb,
        "cores": cores,
        "gid": gid,
        "workdir": str(work),
        "started_at": time.time(),
        "ends_at": time.time() + spec.runtime_estimate.total_seconds(),
        "command": shlex.join(spec.command),
    }

RUNNER_ENV = {"PATH": DEFAULT_PATH}
"""The runner's own environment: fixed, never the job's (see `start_runner`)."""


def start_runner(path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the runner of one attempt; `env` (the job's whole environment) goes in on stdin.

    The runner keeps the broker's user (root), so it never runs with the job's environment:
    the tenant wrote it, and LD_PRELOAD and its kind steer the dynamic loader of any process
    that gets them. The job process takes `env` only after it dropped to its own user. -I keeps
    the runner from reading PYTHON* variables or the job's folder.
    """
    proc = subprocess.Popen(
        [sys.executable, "-I", str(Path(__file__).with_name("_local_runner.py")), str(path)],
        env=RUNNER_ENV,
        cwd=str(path),
        start_new_session=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    try:
        with proc.stdin:
            proc.stdin.write(json.dumps(env).encode())
    except BrokenPipeError:
        pass  # the runner died at once: status() finds no exit code and reports it lost
    return proc
