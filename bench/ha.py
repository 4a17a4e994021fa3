"""High availability under fire: SIGKILL the active scheduler again and again under load.

    .venv/bin/python bench/ha.py --json [--duration 120] [--kill-every 10] [--rate 4] [--burst 20]

Two API replicas and two scheduler candidates (`szb serve --role api|scheduler`, real
processes) share a fresh database on the PostgreSQL at ``SZB_PG_DSN`` (``eval
"$(scripts/pg-test.sh env)"``); their one site is the Alibaba ECS double (every job bursts
there; instances need their agent, played here through the API replicas). A steady stream of
SubmitJob calls (`--rate` per second, alternating replicas, each with a client_id and retried
until acknowledged) plus a SubmitJobs burst of `--burst` jobs every `--kill-every` seconds run
for `--duration` seconds; every `--kill-every` seconds the active scheduler is SIGKILLed and a
new candidate started in its place. Then the load stops and everything drains.

Reported (JSON with `--json`):
- `takeover_s` (p50/p99/max): from the SIGKILL until another candidate says it is active.
- `double_dispatch`: jobs seen with two live attempts at once (sampled every 0.25 s and at
  the end) plus attempts with more than one instance at the double (one ClientToken, two
  instances: a launch sent twice by two leaders without the token would show here).
- `lost_acknowledged`: acknowledged submissions missing from the store at the end.
- `leaked_instances`: instances left at the double once every job ended and a reconcile ran.
- `unfinished`: acknowledged jobs not terminal after the drain (should be 0 too).
Exit status 1 when any of the last four is not 0.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import psycopg  # noqa: E402

from bench.chaos import fresh_database  # noqa: E402
from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc  # noqa: E402
from broker.api import broker_service_pb2 as pb  # noqa: E402
from tests.clouds.e2e_helpers import agent_secret_of, md  # noqa: E402
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint  # noqa: E402
from tests.ha.cloud import A10, cloud_cluster, gpu_spec  # noqa: E402
from tests.ha.conftest import Cluster, Node  # noqa: E402

ECS_KEYS = {"ak-test": "sk-test"}
LIVE = "('PENDING', 'RUNNING')"


class Load:
    """Submissions (steady plus bursts) alternating over the API replicas; acks are kept."""

    def __init__(self, apis: list[Node], rate: float, burst: int, burst_every: float) -> None:
        self.apis, self.rate, self.burst, self.burst_every = apis, rate, burst, burst_every
        self.acked: set[str] = set()
        self.retries = 0
        self.stop = threading.Event()
        self._ids = itertools.count()

    def _submit(self, stub: Any, reqs: list[pb.SubmitJobRequest]) -> None:
        while not self.stop.is_set():
            try:
                resp = stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=md(), timeout=10)
                self.acked.update(r.job.id for r in resp.responses)
                return
            except grpc.RpcError:
                self.retries += 1  # same client_ids: a retry never makes a second job
                time.sleep(0.2)

    def run(self) -> None:
        channels = [grpc.insecure_channel(a.address) for a in self.apis]
        stubs = [broker_service_pb2_grpc.BrokerServiceStub(c) for c in channels]
        started = last_burst = time.monotonic()
        try:
            while not self.stop.is_set():
                n = next(self._ids)
                stub = stubs[n % len(stubs)]
                self._submit(stub, [pb.SubmitJobRequest(job=gpu_spec(f"ha-{n}"), client_id=f"ha-{n}")])
                if time.monotonic() - last_burst >= self.burst_every:
                    last_burst = time.monotonic()
                    reqs = [
                        pb.SubmitJobRequest(job=gpu_spec(f"ha-{n}-b{i}"), client_id=f"ha-{n}-b{i}")
                        for i in range(self.burst)
                    ]
                    self._submit(stubs[(n + 1) % len(stubs)], reqs)
                next_at = started + (n + 1) / self.rate
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            for c in channels:
                c.close()


class Agents:
    """The bootstrap of every instance: report running, then exit 0, through a replica."""

    def __init__(self, dsn: str, apis: list[Node], cloud: EcsCloud) -> None:
        self.dsn, self.apis, self.cloud = dsn, apis, cloud
        self.reported: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        channels = [grpc.insecure_channel(a.address) for a in self.apis]
        stubs = [agent_service_pb2_grpc.AgentServiceStub(c) for c in channels]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for n in itertools.count():
                if self.stop.is_set():
                    break
                rows = conn.execute(
                    f"SELECT id, backend_id FROM attempts WHERE state IN {LIVE} AND backend_id IS NOT NULL"
                ).fetchall()
                for attempt_id, backend_id in rows:
                    if attempt_id not in self.reported and backend_id in self.cloud.user_data:
                        self._play(stubs[n % len(stubs)], attempt_id, backend_id)
                self.stop.wait(0.2)
        for c in channels:
            c.close()

    def _play(self, agent: Any, attempt_id: str, backend_id: str) -> None:
        script = base64.b64decode(self.cloud.user_data[backend_id]).decode()
        secret = agent_secret_of(script)
        try:
            agent.Heartbeat(
                agent_service_pb2.HeartbeatRequest(attempt_id=attempt_id, token=secret, running=True),
                timeout=5,
            )
            agent.ReportExit(
                agent_service_pb2.ReportExitRequest(attempt_id=attempt_id, token=secret, exit_code=0),
                timeout=5,
            )
            self.reported.add(attempt_id)
        except grpc.RpcError:
            pass  # a replica restarting, or a secret a resumed launch replaced: next round


class DoubleWatch:
    """Samples the store for jobs with two live attempts at the same moment."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.jobs: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.wait(0.25):
                rows = conn.execute(
                    f"SELECT job_id FROM attempts WHERE state IN {LIVE} GROUP BY job_id HAVING count(*) > 1"
                ).fetchall()
                self.jobs.update(r[0] for r in rows)


def kill_leader(cluster: Cluster, starting: list[threading.Thread], timeout: float = 60.0) -> float:
    """SIGKILL the active scheduler, start a new candidate; seconds until another one leads."""
    old = cluster.leader()
    old_epoch = old.epochs()[-1]
    old.kill()
    killed = time.monotonic()
    starter = threading.Thread(target=cluster.start, args=("scheduler",), daemon=True)
    starter.start()
    starting.append(starter)
    while True:
        for node in list(cluster.nodes):
            if node is not old and node.running() and node.leading() and node.epochs()[-1] > old_epoch:
                return time.monotonic() - killed
        if time.monotonic() - killed > timeout:
            raise RuntimeError("no takeover within a minute")
        time.sleep(0.01)


def wait_drained(dsn: str, acked: set[str], timeout: float) -> int:
    """Wait until every acknowledged job is terminal; the number still unfinished."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            left = conn.execute(
                "SELECT count(*) FROM jobs WHERE id = ANY(%s)"
                " AND state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
                (list(acked),),
            ).fetchone()
            n = int(left[0]) if left else 0
            if n == 0 or time.monotonic() > deadline:
                return n
            time.sleep(0.5)


def live_twice(dsn: str) -> set[str]:
    """Jobs with more than one live attempt now."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT job_id FROM attempts WHERE state IN {LIVE} GROUP BY job_id HAVING count(*) > 1"
        ).fetchall()
    return {r[0] for r in rows}


def run(
    args: argparse.Namespace, dsn: str, ecs: EcsEndpoint, cloud: EcsCloud, folder: Path
) -> dict[str, Any]:
    cluster = cloud_cluster(folder, dsn, ecs.address, lease=(args.lease, args.lease / 6))
    try:
        apis = [cluster.start("api"), cluster.start("api")]
        cluster.start("scheduler")
        cluster.start("scheduler")
        cluster.leader()
        load = Load(apis, args.rate, args.burst, args.kill_every)
        agents, watch = Agents(dsn, apis, cloud), DoubleWatch(dsn)
        threads = [threading.Thread(target=x.run, daemon=True) for x in (load, agents, watch)]
        for t in threads:
            t.start()
        began, takeovers, starting = time.monotonic(), [], []
        for k in range(1, int(args.duration // args.kill_every) + 1):
            time.sleep(max(0.0, began + k * args.kill_every - time.monotonic()))
            takeovers.append(kill_leader(cluster, starting))
            print(f"kill {len(takeovers)}: takeover {takeovers[-1]:.2f}s", file=sys.stderr, flush=True)
        load.stop.set()
        threads[0].join(timeout=30)
        unfinished = wait_drained(dsn, load.acked, args.drain)
        # Finished instances go at once; a reconcile pass (2 s here) removes any left behind.
        deadline = time.monotonic() + 30
        while cloud.instances and time.monotonic() < deadline:
            time.sleep(0.5)
        agents.stop.set()
        watch.stop.set()
        for starter in starting:
            starter.join(timeout=60)
        return report(dsn, cloud, load, watch, takeovers, unfinished)
    finally:
        cluster.stop()


def report(
    dsn: str, cloud: EcsCloud, load: Load, watch: DoubleWatch, takeovers: list[float], unfinished: int
) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE id = ANY(%s)", (list(load.acked),))}
        attempts = int(conn.execute("SELECT count(*) FROM attempts").fetchone()[0])  # type: ignore[index]
    multi = sum(1 for ids in cloud.tokens.values() if len(ids) > 1)
    doubles = watch.jobs | live_twice(dsn)
    ordered = sorted(takeovers)
    return {
        "kills": len(takeovers),
        "takeover_s": [round(t, 3) for t in takeovers],
        "takeover_p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "takeover_p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)
        if ordered
        else None,
        "takeover_max_s": round(max(ordered), 3) if ordered else None,
        "acknowledged": len(load.acked),
        "submit_retries": load.retries,
        "attempts": attempts,
        "instances_started": sum(len(v) for v in cloud.tokens.values()),
        "double_dispatch": len(doubles) + multi,
        "double_dispatch_jobs": sorted(doubles)[:20],
        "lost_acknowledged": len(load.acked - stored),
        "unfinished": unfinished,
        "leaked_instances": len(cloud.instances),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load and kills")
    ap.add_argument("--kill-every", type=float, default=10.0, help="seconds between SIGKILLs")
    ap.add_argument("--rate", type=float, default=4.0, help="steady SubmitJob calls per second")
    ap.add_argument("--burst", type=int, default=20, help="jobs in each SubmitJobs burst")
    ap.add_argument("--lease", type=float, default=3.0, help="the scheduler lease (ha.lease_s)")
    ap.add_argument("--drain", type=float, default=180.0, help="seconds to wait for every job to end")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    server = os.environ.get("SZB_PG_DSN")
    if not server:
        print('bench/ha.py needs PostgreSQL: eval "$(scripts/pg-test.sh env)"', file=sys.stderr)
        return 2
    cloud = EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",))
    ecs = EcsEndpoint.start(credentials=ECS_KEYS)
    ecs.handler = cloud
    try:
        with fresh_database(server) as dsn, tempfile.TemporaryDirectory(prefix="szb-ha-") as tmp:
            result = run(args, dsn, ecs, cloud, Path(tmp) / "broker")
    finally:
        ecs.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    bad = ("double_dispatch", "lost_acknowledged", "leaked_instances", "unfinished")
    return 1 if any(result[k] for k in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
