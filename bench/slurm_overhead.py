"""Slurm overhead benchmark: N short jobs through the broker vs straight to slurmrestd.

    .venv/bin/python bench/slurm_overhead.py --json [--jobs 20] [--rounds 2]

One run measures both paths side by side on the test cluster (scripts/slurm-cluster.sh; the
bench starts it when none is running and stops it again afterwards):

  direct  one client POSTs the N batch jobs to slurmrestd back to back (the same job
          description the adapter builds: cpu partition, 1 core, `echo`), then polls
          ``GET /job/<id>`` of every unfinished job (as many threads as the broker's
          worker pool), pausing `--poll` seconds between rounds, until each is COMPLETED
  broker  a `szb serve` process (policy: the cluster as on-prem site `shangzhuang-onprem`,
          dispatch poll interval `--poll`) gets the N jobs over gRPC (SubmitJob back to
          back); each job is followed with WatchJob until SUCCEEDED

Latency = submit call start -> completion seen by the client; throughput = N / (first submit
-> last completion). Rounds alternate the order (direct first, then broker first, …) so
neither path always runs on a warmer cluster. ``overhead_ratio`` = broker makespan / direct
makespan (target <= 1.25); ``latency_ratio_p50`` compares the medians.

The broker reads capacity (``GET /nodes`` + ``GET /jobs``) once per dispatch pass; slurmrestd
22.05 cannot filter ``GET /jobs``, so that read grows with slurmctld's job table (finished
jobs stay listed for MinJobAge, 120 s on the test cluster): ``slurm_jobs_listed_at_start``
records it, because the ratio depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

from adapters.slurm import PartitionConfig, ScriptSettings, SlurmAdapter, submit_body  # noqa: E402
from broker.api import broker_service_pb2 as pb  # noqa: E402
from broker.api import broker_service_pb2_grpc, job_pb2  # noqa: E402
from broker.model import AttemptId, JobId, JobSpec, LaunchRequest, Offer, Resources, SiteId  # noqa: E402
from tests.brokerproc import BrokerProcess  # noqa: E402
from tests.slurm.onprem import SITE, auth, write_onprem_config  # noqa: E402

SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"
COMMAND = ("/bin/sh", "-c", "echo bench job $SLURM_JOB_ID")
RUNTIME = timedelta(seconds=60)
CPUS, MEMORY_GB = 1.0, 0.25
POLL_THREADS = min(32, (os.cpu_count() or 1) + 4)  # what the broker's asyncio.to_thread pool has


def cluster(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), cmd], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, check=False)


def ensure_cluster() -> tuple[dict[str, str], bool]:
    """The cluster's client env; True when this run started it (and must stop it)."""
    started = False
    if cluster("status").returncode != 0:
        for cmd in ("install", "start"):
            out = cluster(cmd)
            if out.returncode != 0:
                sys.exit(f"slurm-cluster.sh {cmd} failed:\n{out.stdout}{out.stderr}")
        started = True
    out = cluster("env")
    if out.returncode != 0:
        sys.exit(f"slurm-cluster.sh env failed:\n{out.stderr}")
    env = {}
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip("'\"")
    return env, started


def summary(latencies: list[float], makespan: float) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return {"jobs_per_s": round(len(latencies) / makespan, 3), "makespan_s": round(makespan, 3),
            "p50_s": round(statistics.median(ordered), 3), "p99_s": round(p99, 3),
            "mean_s": round(statistics.fmean(ordered), 3)}


# ------------------------------------------------------------------------------------ direct


class Direct:
    """Batch jobs straight to slurmrestd, as a script with curl would do it."""

    def __init__(self, env: dict[str, str], output_dir: Path, poll_s: float) -> None:
        self.url = env["SZB_SLURM_URL"].rstrip("/")
        self.headers = {"X-SLURM-USER-NAME": env.get("SZB_SLURM_USER", "root"),
                        "X-SLURM-USER-TOKEN": env["SZB_SLURM_TOKEN"]}
        self.client = httpx.Client(timeout=10)
        self.poll_s = poll_s
        self.settings = ScriptSettings(broker_id=f"bench-direct-{uuid.uuid4().hex[:6]}",
                                       output_dir=output_dir, workdir=str(output_dir))
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = SlurmAdapter(SiteId(SITE), {"url": self.url, "token": env["SZB_SLURM_TOKEN"],
                                            "user": env.get("SZB_SLURM_USER", "root"),
                                            "partitions": {"cpu": None}})
        self.version = probe.api_version
        probe.close()
        spec = JobSpec(name="bench", command=COMMAND, runtime_estimate=RUNTIME,
                       resources=Resources(cpus=CPUS, memory_gb=MEMORY_GB))
        self.spec = spec
        self.partition = PartitionConfig("cpu", None, None, 0.5)
        self.offer = Offer(site=SiteId(SITE), instance_type="cpu", accelerator=None, count=0,
                           price_per_hour=0.5)

    def body(self, i: int) -> dict[str, Any]:
        token = f"direct-{uuid.uuid4().hex}"
        req = LaunchRequest(job_id=JobId(f"direct-{i}"), attempt_id=AttemptId(f"direct-{i}-1"),
                            token=token, spec=self.spec, offer=self.offer)
        return submit_body(req, self.partition, self.settings, api_version=self.version, gres_type=None)

    def table_size(self) -> int:
        """Jobs slurmctld lists (finished ones stay MinJobAge): each GET /jobs returns them all."""
        reply = self.client.get(f"{self.url}/slurm/{self.version}/jobs", headers=self.headers)
        return len(reply.json().get("jobs") or [])

    def run(self, n: int) -> tuple[list[float], float]:
        bodies = [self.body(i) for i in range(n)]
        start: dict[str, float] = {}
        t0 = time.perf_counter()
        for body in bodies:
            t = time.perf_counter()
            resp = self.client.post(f"{self.url}/slurm/{self.version}/job/submit", json=body,
                                    headers=self.headers)
            resp.raise_for_status()
            start[str(resp.json()["job_id"])] = t
        done: dict[str, float] = {}
        deadline = time.monotonic() + 300

        def state_of(jid: str) -> str:
            reply = self.client.get(f"{self.url}/slurm/{self.version}/job/{jid}", headers=self.headers)
            jobs = reply.json().get("jobs") or [{}]
            return str(jobs[0].get("job_state"))

        with ThreadPoolExecutor(max_workers=POLL_THREADS) as pool:
            while len(done) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"direct jobs not done: {sorted(set(start) - set(done))}")
                todo = [j for j in start if j not in done]
                for jid, state in zip(todo, pool.map(state_of, todo), strict=True):
                    if state == "COMPLETED":
                        done[jid] = time.perf_counter()
                    elif state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                        raise RuntimeError(f"direct job {jid} ended {state}")
                if len(done) < n:
                    time.sleep(self.poll_s)
        return [done[j] - start[j] for j in start], max(done.values()) - t0


# ------------------------------------------------------------------------------------ broker


class ThroughBroker:
    """The same jobs through a real broker process with the cluster as its on-prem site."""

    def __init__(self, env: dict[str, str], folder: Path, poll_s: float) -> None:
        config = write_onprem_config(folder, env, broker_id=f"bench-{uuid.uuid4().hex[:8]}",
                                     poll_interval_s=poll_s, reconcile_interval_s=60)
        self.proc = BrokerProcess(config)
        self.proc.start()
        self.channel = grpc.insecure_channel(self.proc.address)
        self.stub = broker_service_pb2_grpc.BrokerServiceStub(self.channel)

    def spec(self, i: int) -> job_pb2.JobSpec:
        msg = job_pb2.JobSpec(name=f"bench-{i}", command=list(COMMAND),
                              runtime_estimate=duration_pb2.Duration(seconds=int(RUNTIME.total_seconds())))
        msg.resources.cpus = CPUS
        msg.resources.memory_gb = MEMORY_GB
        return msg

    def run(self, n: int) -> tuple[list[float], float]:
        specs = [self.spec(i) for i in range(n)]
        start: dict[str, float] = {}
        done: dict[str, float] = {}
        failures: list[str] = []
        lock = threading.Lock()

        def follow(job_id: str) -> None:
            for resp in self.stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=auth(), timeout=300):
                state = resp.event.state
                if state == job_pb2.JOB_STATE_SUCCEEDED:
                    with lock:
                        done[job_id] = time.perf_counter()
                    return
                if state in (job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED):
                    failures.append(f"{job_id}: {resp.event.message}")
                    return

        with ThreadPoolExecutor(max_workers=n) as pool:
            t0 = time.perf_counter()
            futures = []
            for msg in specs:
                t = time.perf_counter()
                job = self.stub.SubmitJob(pb.SubmitJobRequest(job=msg), metadata=auth()).job
                start[job.id] = t
                futures.append(pool.submit(follow, job.id))
            for f in futures:
                f.result()
        if failures or len(done) < n:
            raise RuntimeError(f"broker jobs failed: {failures}")
        return [done[j] - start[j] for j in start], max(done.values()) - t0

    def close(self) -> None:
        self.channel.close()
        self.proc.stop()


# ------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20, help="jobs per path and round (default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternating which path goes first")
    ap.add_argument("--poll", type=float, default=0.2,
                    help="poll interval of the direct client and of the broker's dispatcher (s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    env, started = ensure_cluster()
    os.environ.update(env)
    tmp = Path(tempfile.mkdtemp(prefix="szb-slurm-bench-"))
    direct = Direct(env, tmp / "direct-output", args.poll)
    broker = ThroughBroker(env, tmp / "broker", args.poll)
    table_before = direct.table_size()
    lat: dict[str, list[float]] = {"direct": [], "broker": []}
    span: dict[str, float] = {"direct": 0.0, "broker": 0.0}
    try:
        direct.run(2)  # warm-up: version detection, connections, slurmd job launch paths
        broker.run(2)
        for r in range(args.rounds):
            order = [("direct", direct.run), ("broker", broker.run)]
            for name, run in order if r % 2 == 0 else order[::-1]:
                latencies, makespan = run(args.jobs)
                lat[name] += latencies
                span[name] += makespan
    finally:
        broker.close()
        if started:
            cluster("stop")
    n = args.jobs * args.rounds
    result: dict[str, Any] = {
        "jobs": args.jobs, "rounds": args.rounds, "poll_interval_s": args.poll,
        "cluster_started_by_bench": started, "slurm_jobs_listed_at_start": table_before,
        "direct": summary(lat["direct"], span["direct"]) | {"jobs_total": n},
        "broker": summary(lat["broker"], span["broker"]) | {"jobs_total": n},
    }
    result["overhead_ratio"] = round(span["broker"] / span["direct"], 3)
    result["latency_ratio_p50"] = round(result["broker"]["p50_s"] / result["direct"]["p50_s"], 3)
    result["target_overhead_ratio"] = 1.25
    result["within_target"] = result["overhead_ratio"] <= 1.25
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("direct", "broker"):
            s = result[name]
            print(f"{name:7s} {s['jobs_per_s']:7.2f} jobs/s  p50 {s['p50_s']:.2f}s  p99 {s['p99_s']:.2f}s")
        print(f"overhead ratio {result['overhead_ratio']:.2f} (target <= 1.25)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
