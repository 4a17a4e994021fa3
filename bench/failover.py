"""Burst failover and launch overhead, measured at the EC2 boundary (moto behind the fault front).

    .venv/bin/python bench/failover.py --json [--reps 20]

Everything runs on loopback: moto (server mode) behind `tests/doubles/moto_front.py`, and a
real `szb serve` process (`tests/brokerproc.py`) whose policy has an on-prem site that cannot
run the job (A800 only; the job asks for an A10G), so every job bursts straight to AWS
(`aws-east`, zones us-east-1a and us-east-1b at the same price, 1a ranked first). The broker
polls with ``dispatch.poll_interval_s = 0.05``. The bench wraps the front's WSGI app and stamps
every EC2 call with ``time.perf_counter()`` (in this process) when it arrives and when its
answer has been written, so both figures are read off the same clock at the backend boundary.

  failover   scenario: InsufficientInstanceCapacity for g5.xlarge in us-east-1a. One job per
             repetition; failover = arrival of RunInstances in us-east-1b minus the moment the
             failed RunInstances in us-east-1a was answered. Between them the broker records the
             failure, blocks the offer, re-decides the job and starts attempt 2, whose adapter
             first looks for an instance already started with the attempt's token
             (DescribeInstances, idempotency) before RunInstances: ``failover_to_first_call``
             is the gap to that first cloud call, ``failover_moto_between`` the time moto spent
             answering it. The policy's capacity block lasts 1 s and every repetition waits
             it out, so each job meets the fault in 1a again. ``failover_broker_only``
             subtracts moto's time on the calls in between.

moto's state is wiped (``/moto-api/reset``) before every failover repetition and every
direct/broker pair: its DescribeInstances scans every instance ever started, so without the
wipe the idempotency lookup (and the figures) would grow with the run's length.
  overhead   no faults. broker = SubmitJob sent -> the (successful) RunInstances answered;
             direct = boto3 ``run_instances`` sent -> answered, with the kwargs the broker
             sent (same instance type, zone, tags, UserData bytes; fresh ClientToken and
             token tag). ``overhead_ratio`` = broker p50 / direct p50. Repetitions alternate
             which path goes first.

After each broker job the bench plays the instance's bootstrap (AgentService.ReportExit with
the attempt's token, read off the RunInstances tags) so no attempt stays live and polled.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import grpc  # noqa: E402
from botocore.config import Config  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2  # noqa: E402
from broker.api import broker_service_pb2 as pb  # noqa: E402
from tests.brokerproc import BrokerProcess  # noqa: E402
from tests.clouds import on_moto  # noqa: E402
from tests.clouds.e2e_helpers import agent_secret_of, live_attempt  # noqa: E402
from tests.doubles.moto_front import MotoFront, Scenario, capacity_fault  # noqa: E402

TOKEN = "token-bench-0123456789abcdef"
INSTANCE_TYPE = "g5.xlarge"
ZONE_A, ZONE_B = "us-east-1a", "us-east-1b"
POLL_INTERVAL_S = 0.05
CAPACITY_BLOCK_S = 1.0
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + f"""\
tenants:
  - {{id: bench, kind: partner, entity_country: SG}}
burst:
  retries: {{max_transient_retries: 4, backoff_initial: 0.05s, backoff_max: 0.2s}}
  heartbeat_timeout: 1h
  blocklist_ttl: {{capacity: {CAPACITY_BLOCK_S:g}s}}
  # half the attempts fail by design; never throttle the route for it
  failure_throttle: {{max_failure_rate: 1.0}}
"""
    + on_moto.CN_RESIDENCY
)


# ------------------------------------------------------------------------ stamped moto front


@dataclass
class Call:
    """One EC2 call seen at the front, stamped on this process's perf_counter."""

    action: str
    params: dict[str, str]
    t_in: float
    t_out: float = 0.0
    status: str = ""

    @property
    def ok(self) -> bool:
        return self.status.startswith("200")

    @property
    def zone(self) -> str:
        return self.params.get("Placement.AvailabilityZone", "")

    def tags(self) -> dict[str, str]:
        """Tags of the first TagSpecification (RunInstances)."""
        out = {}
        for key, value in self.params.items():
            if key.startswith("TagSpecification.1.Tag.") and key.endswith(".Key"):
                out[value] = self.params.get(key[: -len("Key")] + "Value", "")
        return out

    def filters_on(self, value: str) -> bool:
        """A Describe* call filtering on `value` (find_by_token's token filter)."""
        return any(k.startswith("Filter.") and v == value for k, v in self.params.items())


@dataclass
class _Stamper:
    app: Callable[..., Iterable[bytes]]
    calls: list[Call] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        t_in = time.perf_counter()
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        call = Call(params.get("Action", ""), params, t_in)
        if call.action:
            self.calls.append(call)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            call.status = status
            return start_response(status, headers, exc_info)

        return _Answered(self.app(environ, start), call, self.cond)


class _Answered:
    """The app's answer; werkzeug calls close() once every byte of it is written."""

    def __init__(self, inner: Iterable[bytes], call: Call, cond: threading.Condition) -> None:
        self.inner, self.call, self.cond = inner, call, cond

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.inner)

    def close(self) -> None:
        try:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
        finally:
            with self.cond:
                self.call.t_out = time.perf_counter()
                self.cond.notify_all()


class StampedFront(MotoFront):
    """`MotoFront` whose every EC2 call is recorded with arrival and answer times."""

    def __init__(self) -> None:
        super().__init__()
        self.stamper = _Stamper(self._server.app)
        self._server.app = self.stamper

    def wait_call(self, pred: Callable[[Call], bool], since: int, timeout: float = 20.0) -> Call:
        """The first answered call after index `since` that satisfies `pred`."""

        def found() -> Call | None:
            return next((c for c in self.stamper.calls[since:] if c.t_out and pred(c)), None)

        with self.stamper.cond:
            if not self.stamper.cond.wait_for(lambda: found() is not None, timeout):
                raise RuntimeError(f"no matching EC2 call within {timeout:.0f}s")
        hit = found()
        assert hit is not None
        return hit

    def calls_since(self, since: int) -> list[Call]:
        return list(self.stamper.calls[since:])


# ------------------------------------------------------------------------------ broker setup


def write_setup(folder: Path, moto_url: str) -> Path:
    setup = on_moto.BrokerSetup(
        POLICY,
        tokens={"bench": TOKEN},
        sites={"aws-east": on_moto.aws_on_moto(moto_url, heartbeat_s=60)},
        catalogs={
            "aws-east.csv": on_moto.catalog(
                f"{INSTANCE_TYPE},A10G,1,4,16,1.006,,us-east-1,{ZONE_A}",
                f"{INSTANCE_TYPE},A10G,1,4,16,1.006,,us-east-1,{ZONE_B}",
            )
        },
        dispatch=f"poll_interval_s: {POLL_INTERVAL_S}",
    )
    return setup.write(folder)


MD = (("authorization", f"Bearer {TOKEN}"),)


def gpu_job(name: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py", "--epochs", "3"],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10G"])),
    )


class Bench:
    def __init__(self, front: StampedFront, broker: BrokerProcess, channel: grpc.Channel) -> None:
        self.front = front
        self.broker = broker
        self.stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        self.agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        self.ec2 = boto3.client(
            "ec2",
            endpoint_url=front.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDTESTTEST",
            aws_secret_access_key="secret",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        self.template: Call | None = None
        self.seq = 0

    def reset(self) -> None:
        """Wipe moto; the first call after a wipe rebuilds its region backend (~0.1 s): do it here."""
        self.front.reset()
        self.ec2.describe_instances()

    def finish(self, job_id: str, launch: Call) -> None:
        """Play the bootstrap's exit report; wait until the job is terminal and its instance gone."""
        data_dir = self.broker.config.parent / "data"
        deadline = time.monotonic() + 20
        # The front answers RunInstances a moment before the broker has stored the instance id;
        # an exit reported in between would leave nothing for the broker to terminate.
        while live_attempt(data_dir, job_id)[2] is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{job_id}: no backend id recorded")
            time.sleep(0.01)
        since = len(self.front.stamper.calls)
        tags = launch.tags()
        # The agent secret travels in the UserData only (the token tag is public).
        secret = agent_secret_of(base64.b64decode(launch.params["UserData"]).decode())
        self.agent.ReportExit(
            agent_service_pb2.ReportExitRequest(attempt_id=tags["szb:attempt"], token=secret, exit_code=0)
        )
        while self.stub.GetJob(pb.GetJobRequest(id=job_id), metadata=MD).job.state not in TERMINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{job_id} did not finish")
            time.sleep(0.02)
        # the broker terminates the instance after the exit report; let that land before a wipe
        self.front.wait_call(lambda c: c.action == "TerminateInstances", since)

    def submit(self) -> tuple[str, float, float]:
        self.seq += 1
        t0 = time.perf_counter()
        job = self.stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job(f"bench-{self.seq}")), metadata=MD).job
        return job.id, t0, time.perf_counter()

    # --- failover ---------------------------------------------------------------------------

    def failover_once(self) -> dict[str, float]:
        self.reset()
        self.front.scenario = Scenario(faults=[capacity_fault(INSTANCE_TYPE, zone=ZONE_A)])
        since = len(self.front.stamper.calls)
        job_id, _, _ = self.submit()

        def launch_of(zone: str) -> Callable[[Call], bool]:
            return lambda c: (
                c.action == "RunInstances" and c.zone == zone and c.tags().get("szb:job") == job_id
            )

        good = self.front.wait_call(launch_of(ZONE_B), since)
        calls = self.front.calls_since(since)
        failed = [c for c in calls if launch_of(ZONE_A)(c)]
        if len(failed) != 1 or failed[0].ok:
            raise RuntimeError(f"expected one failed RunInstances in {ZONE_A}, saw {len(failed)}")
        bad = failed[0]
        between = [c for c in calls if bad.t_out <= c.t_in < good.t_in]
        self.finish(job_id, good)
        self.front.scenario = Scenario()
        wait = CAPACITY_BLOCK_S + 0.05 - (time.perf_counter() - bad.t_out)
        if wait > 0:
            time.sleep(wait)  # let the block on 1a lapse: the next job meets the fault again
        return {
            "failover": good.t_in - bad.t_out,
            "to_first_call": (between[0].t_in if between else good.t_in) - bad.t_out,
            "moto_between": sum(c.t_out - c.t_in for c in between),
            "broker_only": good.t_in - bad.t_out - sum(c.t_out - c.t_in for c in between),
            "calls_between": len(between),
        }

    # --- overhead ---------------------------------------------------------------------------

    def broker_once(self) -> dict[str, float]:
        since = len(self.front.stamper.calls)
        job_id, t0, t_rpc = self.submit()
        launch = self.front.wait_call(
            lambda c: c.action == "RunInstances" and c.tags().get("szb:job") == job_id, since
        )
        if not launch.ok:
            raise RuntimeError(f"RunInstances failed: {launch.status}")
        token = launch.tags()["szb:token"]
        lookup = next((c for c in self.front.calls_since(since) if c.filters_on(token)), None)
        self.template = launch
        self.finish(job_id, launch)
        return {
            "total": launch.t_out - t0,
            "submit_rpc": t_rpc - t0,
            "to_first_call": (lookup.t_in if lookup else launch.t_in) - t0,
            "lookup_moto": (lookup.t_out - lookup.t_in) if lookup else 0.0,
            "lookup_to_run": launch.t_in - (lookup.t_out if lookup else launch.t_in),
            "run_moto": launch.t_out - launch.t_in,
        }

    def direct_kwargs(self) -> dict[str, Any]:
        """The broker's last RunInstances, replayed with a fresh token (and not owned by it)."""
        assert self.template is not None
        p = self.template.params
        tags = self.template.tags()
        tags["szb:token"] = secrets.token_hex(16)
        tags["szb:broker"] = "benchdirect"  # same length; keeps the broker's reconcile off it
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        return {
            "ImageId": p["ImageId"],
            "InstanceType": p["InstanceType"],
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": tags["szb:token"],
            "UserData": base64.b64decode(p["UserData"]).decode(),
            "InstanceInitiatedShutdownBehavior": p["InstanceInitiatedShutdownBehavior"],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
            "Placement": {"AvailabilityZone": p["Placement.AvailabilityZone"]},
        }

    def direct_once(self) -> dict[str, float]:
        kwargs = self.direct_kwargs()
        since = len(self.front.stamper.calls)
        t0 = time.perf_counter()
        self.ec2.run_instances(**kwargs)
        t1 = time.perf_counter()
        launch = self.front.wait_call(lambda c: c.action == "RunInstances", since)
        return {"total": launch.t_out - t0, "client": t1 - t0, "run_moto": launch.t_out - launch.t_in}


# ------------------------------------------------------------------------------------ report


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ms(x: float) -> float:
    return round(x * 1000, 2)


def p50(rows: list[dict[str, float]], key: str) -> float:
    return ms(statistics.median(r[key] for r in rows))


def p99(rows: list[dict[str, float]], key: str) -> float:
    return ms(pct([r[key] for r in rows], 0.99))


def run(reps: int, failover_reps: int) -> dict[str, Any]:
    started = time.perf_counter()
    front = StampedFront.start()
    assert isinstance(front, StampedFront)
    folder = Path(tempfile.mkdtemp(prefix="szb-bench-failover-"))
    broker = BrokerProcess(write_setup(folder, front.url))
    try:
        broker.start()
        with grpc.insecure_channel(broker.address) as channel:
            bench = Bench(front, broker, channel)
            bench.broker_once()  # warm-up: connections, first decision, boto3 models
            bench.direct_once()
            fails = [bench.failover_once() for _ in range(failover_reps)]
            brokered, direct = [], []
            for i in range(reps):
                bench.reset()
                if i % 2:
                    brokered.append(bench.broker_once())
                    direct.append(bench.direct_once())
                else:
                    direct.append(bench.direct_once())
                    brokered.append(bench.broker_once())
    finally:
        broker.stop()
        front.stop()
        shutil.rmtree(folder, ignore_errors=True)
    direct_ms, broker_ms = p50(direct, "total"), p50(brokered, "total")
    return {
        "failover_reps": failover_reps,
        "failover_p50_ms": p50(fails, "failover"),
        "failover_p99_ms": p99(fails, "failover"),
        "failover_min_ms": ms(min(f["failover"] for f in fails)),
        "failover_to_first_call_p50_ms": p50(fails, "to_first_call"),
        "failover_moto_between_p50_ms": p50(fails, "moto_between"),
        "failover_broker_only_p50_ms": p50(fails, "broker_only"),
        "failover_broker_only_p99_ms": p99(fails, "broker_only"),
        "failover_calls_between": max(int(f["calls_between"]) for f in fails),
        "overhead_reps": reps,
        "direct_ms": direct_ms,
        "direct_p99_ms": p99(direct, "total"),
        "direct_client_ms": p50(direct, "client"),
        "broker_ms": broker_ms,
        "broker_p99_ms": p99(brokered, "total"),
        "overhead_ratio": round(broker_ms / direct_ms, 2),
        "broker_breakdown_p50_ms": {
            "submit_rpc": p50(brokered, "submit_rpc"),
            "submit_to_first_cloud_call": p50(brokered, "to_first_call"),
            "lookup_by_token_moto": p50(brokered, "lookup_moto"),
            "lookup_to_run_instances": p50(brokered, "lookup_to_run"),
            "run_instances_moto": p50(brokered, "run_moto"),
        },
        "direct_run_instances_moto_ms": p50(direct, "run_moto"),
        "poll_interval_s": POLL_INTERVAL_S,
        "wall_s": round(time.perf_counter() - started, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--reps", type=int, default=20, help="repetitions of each measurement")
    parser.add_argument(
        "--failover-reps", type=int, default=None, help="failover repetitions (default: --reps)"
    )
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    result = run(args.reps, args.failover_reps or args.reps)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
