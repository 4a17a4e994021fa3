"""The chaos harness: SIGKILL `szb serve` at random moments while jobs burst to the doubles.

One round: a real broker (`tests.crash.world`: local executor on-prem, moto for AWS and
libcloud, the ECS double for Alibaba) gets `jobs` submissions spread over the round; it is
killed with SIGKILL `kills` times, each at a uniformly random moment 0–`max_alive_s` after it
said it was ready, and restarted on the same ports at once. Cloud instances run the very
UserData the broker gave them (`tests.crash.instances`); local jobs run under the local
runner; both survive the broker, as real machines would. Every job's command writes a ledger
line when it starts and when it ends.

After the last kill the round settles (every job terminal, no instance left), then counts,
from the clouds' own APIs, the ledger and the store, what must all be zero:

- lost jobs (acknowledged but missing, or never finished), duplicate jobs (two jobs for one
  client id), duplicate instances for one attempt, jobs executed again after a completed
  execution, wrong final outcomes (state or exit code not what the command returned),
  instances left running or stopped, dangling (still live) attempts, and terminal attempts
  whose state was later rewritten (sampled while the round runs).
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.model import AttemptState, Job, JobId, JobState
from broker.store import JobStore
from tests.brokerproc import BrokerProcess
from tests.crash import ledger
from tests.crash.client import MD, Stub, job_spec
from tests.crash.instances import GONE_EC2, Instances, attempt_of
from tests.crash.world import Broker, write_setup
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront
from tests.ports import lasting_port

ACCELERATORS = ("A10G", "A10", "T4", "A800")
"""aws-east (moto), aliyun-bj (ECS double), lc-east (libcloud on moto), onprem (local)."""
FAILING_EXIT_CODE = 3


@dataclass(frozen=True)
class ChaosPlan:
    jobs: int = 16
    kills: int = 8
    seed: int = 0
    max_alive_s: float = 3.0
    """Each kill comes at a uniformly random moment this long at most after the broker is ready."""
    job_seconds: tuple[float, float] = (0.5, 3.0)
    fail_every: int = 5
    """Every n-th job exits with FAILING_EXIT_CODE (its right outcome is FAILED with that code)."""
    settle_timeout_s: float = 150.0


@dataclass
class ChaosReport:
    store: str
    seed: int
    kills: int
    jobs: int
    seconds: float = 0.0
    lost_jobs: int = 0
    duplicate_jobs: int = 0
    duplicate_instances: int = 0
    reexecuted_jobs: int = 0
    overlapping_runs: int = 0
    wrong_outcomes: int = 0
    leftover_instances: int = 0
    dangling_attempts: int = 0
    rewritten_attempts: int = 0
    instances: int = 0
    attempts: int = 0
    kill_after_ready_s: list[float] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    COUNTS = (
        "lost_jobs",
        "duplicate_jobs",
        "duplicate_instances",
        "reexecuted_jobs",
        "overlapping_runs",
        "wrong_outcomes",
        "leftover_instances",
        "dangling_attempts",
        "rewritten_attempts",
    )

    def problems(self) -> dict[str, int]:
        """The counts that are not zero (all must be)."""
        return {name: getattr(self, name) for name in self.COUNTS if getattr(self, name)}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Submission:
    name: str
    client_id: str
    exit_code: int
    job_id: str = ""


def run_round(
    plan: ChaosPlan,
    folder: Path,
    moto: MotoFront,
    ecs: EcsCloud,
    ecs_address: str,
    *,
    store_dsn: str | None = None,
) -> ChaosReport:
    """One round of kills; returns what it counted (see the module docstring)."""
    rng = random.Random(plan.seed)
    store = "postgresql" if store_dsn else "sqlite"
    report = ChaosReport(store=store, seed=plan.seed, kills=0, jobs=plan.jobs)
    book = folder / "ledger.jsonl"
    config = write_setup(
        folder, moto.url, ecs_address, agent_port=lasting_port(), store_dsn=store_dsn,
        heartbeat_timeout="30s", report_give_up_s=600, reconcile_interval_s=2.0,
    )
    broker = Broker(config, store_dsn)
    subs = [
        _Submission(
            name=f"c{i}",
            client_id=f"chaos-{plan.seed}-{i}",
            exit_code=FAILING_EXIT_CODE if plan.fail_every and (i + 1) % plan.fail_every == 0 else 0,
        )
        for i in range(plan.jobs)
    ]
    started = time.monotonic()
    broker.start(port=lasting_port())
    sampler = _Sampler(lambda: broker.open_store(), subs)
    try:
        with Instances(moto, ecs, folder / "instances") as instances:
            sampler.start()
            submitter = threading.Thread(
                target=_submit_all, args=(broker, subs, book, plan, random.Random(plan.seed + 1)), daemon=True
            )
            submitter.start()
            for _ in range(plan.kills):
                alive = rng.uniform(0, plan.max_alive_s)
                time.sleep(alive)
                broker.kill()
                report.kills += 1
                report.kill_after_ready_s.append(round(alive, 3))
                broker.restart()
            submitter.join(timeout=120)
            _settle(broker, subs, instances, moto, ecs, plan.settle_timeout_s, report)
            broker.stop()
            sampler.stop()
            _count(report, subs, book, instances, moto, ecs, broker.open_store(), sampler)
    finally:
        sampler.stop()
        broker.stop()
    report.seconds = round(time.monotonic() - started, 1)
    return report




def _submit_all(
    broker: BrokerProcess, subs: list[_Submission], book: Path, plan: ChaosPlan, rng: random.Random
) -> None:
    """Submit every job, spread over the kills; a submission the broker did not answer is
    sent again with the same client id until it is."""
    accels = [ACCELERATORS[i % len(ACCELERATORS)] for i in range(len(subs))]
    rng.shuffle(accels)
    spread = plan.kills * (plan.max_alive_s / 2 + 2.5) / max(1, len(subs))
    for sub, accel in zip(subs, accels, strict=True):
        seconds = rng.uniform(*plan.job_seconds)
        spec = job_spec(f"chaos-{sub.name}", accel, ledger.command(book, sub.name, seconds, sub.exit_code))
        spec.labels["chaos"] = "yes"
        while not sub.job_id:
            try:
                with grpc.insecure_channel(broker.address) as channel:
                    job = Stub(channel).SubmitJob(
                        pb.SubmitJobRequest(job=spec, client_id=sub.client_id), metadata=MD, timeout=5
                    ).job
                sub.job_id = job.id
            except grpc.RpcError:
                time.sleep(0.2)  # the broker is down or restarting
        time.sleep(rng.uniform(0, 2 * spread))


def _settle(
    broker: BrokerProcess,
    subs: list[_Submission],
    instances: Instances,
    moto: MotoFront,
    ecs: EcsCloud,
    timeout: float,
    report: ChaosReport,
) -> None:
    """Wait until every job is terminal and no instance of ours is left (or the timeout)."""
    deadline = time.monotonic() + timeout
    terminal = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(broker.address) as channel:
                stub = Stub(channel)
                states = [
                    stub.GetJob(pb.GetJobRequest(id=s.job_id), metadata=MD, timeout=5).job.state
                    for s in subs
                    if s.job_id
                ]
        except grpc.RpcError:
            states = []
        settled = len(states) == len(subs) and all(s in terminal for s in states)
        if settled and not _leftovers(moto, ecs) and not instances.running():
            return
        time.sleep(0.5)
    report.details.append("did not settle within the timeout")


def _ec2_instances(moto: MotoFront) -> list[dict[str, Any]]:
    client = boto3.client(
        "ec2", endpoint_url=moto.url, region_name="us-east-1",
        aws_access_key_id="AKIDCHAOS", aws_secret_access_key="chaos",
    )
    out: list[dict[str, Any]] = []
    for res in client.describe_instances()["Reservations"]:
        out.extend(res["Instances"])  # type: ignore[arg-type]
    return out


def _tags(inst: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def _leftovers(moto: MotoFront, ecs: EcsCloud) -> list[str]:
    """Instances of ours still running or stopped, from the clouds' own APIs."""
    left = [
        f"ec2 {i['InstanceId']} {i['State']['Name']}"
        for i in _ec2_instances(moto)
        if "szb:broker" in _tags(i) and i["State"]["Name"] not in GONE_EC2
    ]
    left += [f"ecs {iid} {inst['Status']}" for iid, inst in list(ecs.instances.items())]
    return left


class _Sampler:
    """Reads every attempt a few times a second; a terminal attempt must never change."""

    def __init__(self, open_store: Any, subs: list[_Submission]) -> None:
        self.open_store = open_store
        self.subs = subs
        self.first_terminal: dict[str, AttemptState] = {}
        self.rewritten: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def check(self, store: JobStore) -> None:
        for sub in list(self.subs):
            if not sub.job_id:
                continue
            for attempt in store.attempts_for(JobId(sub.job_id)):
                first = self.first_terminal.get(attempt.id)
                if first is None:
                    if attempt.state.terminal:
                        self.first_terminal[attempt.id] = attempt.state
                elif attempt.state != first and attempt.id not in self.rewritten:
                    self.rewritten.append(f"{attempt.id}: {first.value} -> {attempt.state.value}")

    def _run(self) -> None:
        store: JobStore | None = None
        while not self._stop.wait(0.25):
            try:
                store = store or self.open_store()
                self.check(store)
            except Exception:  # the database is being recovered by a restarting broker
                if store is not None:
                    store.close()
                store = None
        if store is not None:
            store.close()


def _count(
    report: ChaosReport,
    subs: list[_Submission],
    book: Path,
    instances: Instances,
    moto: MotoFront,
    ecs: EcsCloud,
    store: JobStore,
    sampler: _Sampler,
) -> None:
    try:
        jobs = _all_jobs(store)
        sampler.check(store)
        by_client: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_client[job.client_id or ""].append(job)
        lines = ledger.entries(book)
        runs = ledger.runs(book)
        for sub in subs:
            mine = by_client.get(sub.client_id, [])
            if not sub.job_id or not mine or not mine[0].state.terminal:
                report.lost_jobs += 1
                report.details.append(f"lost {sub.name}: {[(j.id, j.state.value) for j in mine]}")
                continue
            if len(mine) > 1:
                report.duplicate_jobs += 1
                report.details.append(f"duplicate {sub.name}: {[j.id for j in mine]}")
            job = mine[0]
            want = JobState.SUCCEEDED if sub.exit_code == 0 else JobState.FAILED
            if job.state != want or job.exit_code != sub.exit_code:
                report.wrong_outcomes += 1
                report.details.append(f"wrong {sub.name}: {job.state.value} {job.exit_code} ({job.message})")
            if ledger.started_again_after_end(runs.get(sub.name, [])):
                report.reexecuted_jobs += 1
                report.details.append(f"re-executed {sub.name}: {runs[sub.name]}")
            if ledger.overlapping_runs(lines.get(sub.name, [])):
                report.overlapping_runs += 1
                report.details.append(f"two runs at once of {sub.name}: {runs[sub.name]}")
            report.attempts += job.attempts
        live = store.live_attempts()
        report.dangling_attempts = len(live)
        report.details += [f"dangling {a.id} {a.state.value} at {a.site}" for a in live]
    finally:
        store.close()
    report.rewritten_attempts = len(sampler.rewritten)
    report.details += [f"rewritten {r}" for r in sampler.rewritten]
    per_attempt: Counter[str] = Counter()
    for inst in _ec2_instances(moto):
        attempt = _tags(inst).get("szb:attempt")
        if attempt:
            per_attempt[attempt] += 1
    for user_data in list(ecs.user_data.values()):  # every ECS instance ever created
        attempt = attempt_of(base64.b64decode(user_data).decode())
        if attempt:
            per_attempt[attempt] += 1
    report.instances = sum(per_attempt.values())
    report.duplicate_instances = sum(1 for n in per_attempt.values() if n > 1)
    report.details += [f"instances for {a}: {n}" for a, n in per_attempt.items() if n > 1]
    left = _leftovers(moto, ecs)
    report.leftover_instances = len(left)
    report.details += [f"left {x}" for x in left]


def _all_jobs(store: JobStore) -> list[Job]:
    jobs: list[Job] = []
    token = ""
    while True:
        page = store.list_jobs(None, labels={"chaos": "yes"}, page_size=500, page_token=token)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs
