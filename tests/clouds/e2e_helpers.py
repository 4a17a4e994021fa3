"""Helpers for end-to-end tests that drive a broker process and play instance bootstraps."""

from __future__ import annotations

import base64
import json
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import grpc

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from broker.serde import state_from_proto
from broker.store import SqliteStore
from tests.brokerproc import JOB_PYTHON, BrokerProcess, szb

TOKEN = "token-sg-lab-0123456789"
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def job_yaml(
    folder: Path,
    name: str,
    *,
    max_wait: str,
    estimate: str = "10h",
    command: str = "print(1)",
    accelerators: str = "A800, A10G",
) -> Path:
    """A one-accelerator job file running `command` in Python (as the sandboxed job user can)."""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ncommand: [{JOB_PYTHON}, -c, {json.dumps(command)}]\nruntime_estimate: {estimate}\n"
        f"max_wait: {max_wait}\nresources:\n  accelerators: {{count: 1, any_of: [{accelerators}]}}\n"
    )
    return path


def submit_file(broker: BrokerProcess, token: str, job: Path) -> str:
    """`szb submit JOB -o json` as a user types it, which must succeed; the new job's id."""
    submitted = szb(broker, token, "submit", str(job), "-o", "json")
    assert submitted.returncode == 0, submitted.stderr
    return str(json.loads(submitted.stdout)[0]["id"])


def md(token: str = TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def wait_state(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    states: set[int],
    timeout: float = 30,
    token: str = TOKEN,
) -> job_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md(token)).job
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{job_id} stuck in {state_from_proto(job.state)}: {job.message}")
        time.sleep(0.1)


def events(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, token: str = TOKEN
) -> list[job_pb2.JobEvent]:
    """A finished job's whole history (its stream ends after the last event). The deadline only
    guards a hang: a loaded broker can take longer than 10 s to send a history."""
    return [r.event for r in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=md(token), timeout=120)]


def live_attempt(data_dir: Path, job_id: str) -> tuple[str, str, str | None]:
    """(attempt id, token, backend id) of the job's newest attempt, read from the store file."""
    store = SqliteStore(data_dir / "broker.db")
    try:
        attempt = store.attempts_for(job_id)[-1]  # type: ignore[arg-type]
        return attempt.id, attempt.token, attempt.backend_id
    finally:
        store.close()


UserDataFn = Callable[[str], str]
"""The UserData script an instance (by backend id) was started with."""


def ecs_user_data(clouds: Iterable[Mapping[str, str]]) -> UserDataFn:
    """UserData lookup over ECS doubles' `user_data` maps (base64 as sent)."""

    def lookup(instance_id: str) -> str:
        for user_data in clouds:
            if instance_id in user_data:
                return base64.b64decode(user_data[instance_id]).decode()
        raise AssertionError(f"no UserData for {instance_id}")

    return lookup


def agent_secret_of(script: str) -> str:
    """The agent secret a UserData script hands to its instance's bootstrap."""
    for line in script.splitlines():
        if line.startswith("SZB_AGENT_TOKEN="):
            return shlex.split(line.split("=", 1)[1])[0]
    raise AssertionError("the UserData carries no agent secret")


def play_bootstrap(broker: BrokerProcess, job_id: str, user_data: UserDataFn, exit_code: int = 0) -> None:
    """What the UserData script does: heartbeat as running, then report the exit status.

    It authenticates with the agent secret found in the instance's UserData, as the real one does.
    """
    data_dir = broker.config.parent / "data"
    deadline = time.monotonic() + 20
    while True:
        attempt_id, _token, backend = live_attempt(data_dir, job_id)
        if backend is not None:
            break
        assert time.monotonic() < deadline, "no backend id recorded"
        time.sleep(0.1)
    token = agent_secret_of(user_data(backend))
    with grpc.insecure_channel(broker.address) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        agent.Heartbeat(agent_service_pb2.HeartbeatRequest(attempt_id=attempt_id, token=token, running=True))
        agent.ReportExit(
            agent_service_pb2.ReportExitRequest(
                attempt_id=attempt_id, token=token, exit_code=exit_code, log_tail="epoch 3/3 done\n"
            )
        )


def play_bootstrap_when_on(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    broker: BrokerProcess,
    job_id: str,
    site: str,
    user_data: UserDataFn,
    timeout: float = 30,
    token: str = TOKEN,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md(token)).job
        if job.site == site and job.state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING):
            break
        assert job.state not in TERMINAL, job.message
        assert time.monotonic() < deadline, f"never reached {site}: {job.site} {job.message}"
        time.sleep(0.1)
    play_bootstrap(broker, job_id, user_data)
