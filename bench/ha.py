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
  the end), plus attempts with more than one instance at the double (one ClientToken, two
  instances), plus `deposed_backend_calls`: calls the double received from a process (each
  candidate signs with an access key of its own) after another candidate was elected in its
  place. With `--mode pause|mixed` the leader is SIGSTOPped instead (and resumed once a
  standby took over), which is where a deposed leader could still call a backend.
- `lost_acknowledged`: acknowledged submissions missing from the store at the end.
- `leaked_instances`: instances left at the double once every job ended and a reconcile ran.
- `unfinished`: acknowledged jobs not terminal after the drain (should be 0 too).
- `late_standby`: rounds that found a deposed, resumed leader still saying it led (it prints
  `standby` only once it runs again); the newest term's leader is taken, nothing overlapped.
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

ECS_KEYS = {"ak-test": "sk-test", **{f"ak-s{i}": "sk-test" for i in range(200)}}
AK_ENV = "SZB_BENCH_AK"
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


class CallLog:
    """The ECS double's handler, noting when each process (by its access key) called it."""

    def __init__(self, inner: EcsCloud) -> None:
        self.inner = inner
        self.calls: list[tuple[float, str, str]] = []

    def __call__(self, req: Any) -> Any:
        self.calls.append((time.monotonic(), req.access_key_id, req.action))
        return self.inner(req)


class Candidates:
    """Scheduler candidates, each with an access key of its own, and each one's terms."""

    START_SLACK_S = 0.2
    """A term is seen from the election log line, read a moment after the claim itself."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.keys: dict[int, str] = {}
        self.terms: dict[str, list[list[float]]] = {}
        """Access key -> [start, end] of each term (end: another candidate was elected)."""
        self._seen: dict[int, int] = {}
        self._n = itertools.count()
        self.stop = threading.Event()
        self.late_standby = 0
        """Rounds where a deposed (resumed) leader still said it led: its `standby` came late."""

    def leader(self, timeout: float = 120.0) -> Node:
        """The candidate of the newest term that says it leads. A resumed leader prints its
        `standby` line only once its process runs again: counted, not taken for an overlap (the
        lease and the fence, not what a process printed last, say who may act)."""
        deadline = time.monotonic() + timeout
        while True:
            leading = [n for n in self.cluster.nodes if n.role == "scheduler" and n.running() and n.leading()]
            if leading:
                self.late_standby += len(leading) - 1
                return max(leading, key=lambda n: n.epochs()[-1])
            if time.monotonic() > deadline:
                raise RuntimeError("no scheduler was elected")
            time.sleep(0.05)

    def start(self) -> Node:
        key = f"ak-s{next(self._n)}"
        node = self.cluster.start("scheduler", {AK_ENV: key})
        self.keys[id(node)] = key
        return node

    def watch(self) -> None:
        """Note each election as soon as its log line appears (polled every 5 ms)."""
        while not self.stop.wait(0.005):
            for node in list(self.cluster.nodes):
                key = self.keys.get(id(node))
                if key is None:
                    continue
                elected = sum(1 for line in list(node.output) if "elected active scheduler" in line)
                if elected > self._seen.get(id(node), 0):
                    self._seen[id(node)] = elected
                    now = time.monotonic()
                    for other in self.terms.values():
                        if other and other[-1][1] == float("inf"):
                            other[-1][1] = now
                    self.terms.setdefault(key, []).append([now - self.START_SLACK_S, float("inf")])

    def deposed_calls(self, calls: list[tuple[float, str, str]]) -> list[tuple[str, float]]:
        """Calls a candidate made outside its terms (action, seconds after its last term ended)."""
        out = []
        for at, key, action in calls:
            terms = self.terms.get(key, [])
            if key.startswith("ak-s") and not any(a <= at <= b for a, b in terms):
                ended = max((b for _, b in terms if b < at), default=at)
                out.append((action, round(at - ended, 3)))
        return out


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


def take_over(
    candidates: Candidates, pause: bool, starting: list[threading.Thread], timeout: float = 60.0
) -> float:
    """SIGKILL (or SIGSTOP) the active scheduler; seconds until another candidate leads.

    A killed one is replaced by a new candidate; a paused one is resumed after the takeover
    and must step down on its own (its calls after the takeover are counted)."""
    cluster = candidates.cluster
    old = candidates.leader()
    old_epoch = old.epochs()[-1]
    old.pause() if pause else old.kill()
    stopped = time.monotonic()
    if not pause:
        starter = threading.Thread(target=candidates.start, daemon=True)
        starter.start()
        starting.append(starter)
    while True:
        for node in list(cluster.nodes):
            if node is not old and node.running() and node.leading() and node.epochs()[-1] > old_epoch:
                took = time.monotonic() - stopped
                if pause:
                    old.resume()
                return took
        if time.monotonic() - stopped > timeout:
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


def run(args: argparse.Namespace, dsn: str, ecs: EcsEndpoint, calls: CallLog, folder: Path) -> dict[str, Any]:
    cloud = calls.inner
    cluster = cloud_cluster(
        folder,
        dsn,
        ecs.address,
        lease=(args.lease, args.lease / 6),
        access_key=f"access_key_id_from_env: {AK_ENV}",
    )
    candidates = Candidates(cluster)
    threading.Thread(target=candidates.watch, daemon=True).start()
    try:
        apis = [cluster.start("api", {AK_ENV: "ak-test"}), cluster.start("api", {AK_ENV: "ak-test"})]
        candidates.start()
        candidates.start()
        cluster.leader()
        load = Load(apis, args.rate, args.burst, args.kill_every)
        agents, watch = Agents(dsn, apis, cloud), DoubleWatch(dsn)
        threads = [threading.Thread(target=x.run, daemon=True) for x in (load, agents, watch)]
        for t in threads:
            t.start()
        began, takeovers, starting = time.monotonic(), [], []
        for k in range(1, int(args.duration // args.kill_every) + 1):
            time.sleep(max(0.0, began + k * args.kill_every - time.monotonic()))
            pause = args.mode == "pause" or (args.mode == "mixed" and k % 2 == 0)
            takeovers.append(take_over(candidates, pause, starting))
            what = "pause" if pause else "kill"
            print(f"{what} {len(takeovers)}: takeover {takeovers[-1]:.2f}s", file=sys.stderr, flush=True)
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
        result = report(dsn, cloud, load, watch, takeovers, unfinished)
        deposed = candidates.deposed_calls(calls.calls)
        result["deposed_backend_calls"] = len(deposed)
        result["deposed_calls_detail"] = deposed[:20]
        result["double_dispatch"] += len(deposed)
        result["mode"] = args.mode
        result["late_standby"] = candidates.late_standby
        return result
    finally:
        candidates.stop.set()
        cluster.stop()
        for node in cluster.nodes:  # who unseated whom, for the record
            for line in node.output:
                if "terminating its session" in line or "leadership (epoch" in line:
                    print(f"[{node.pid}] {line.rstrip()}", file=sys.stderr)


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
    ap.add_argument(
        "--mode",
        choices=["kill", "pause", "mixed"],
        default="kill",
        help="SIGKILL the leader, SIGSTOP it (resumed after the takeover), or alternate",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    server = os.environ.get("SZB_PG_DSN")
    if not server:
        print('bench/ha.py needs PostgreSQL: eval "$(scripts/pg-test.sh env)"', file=sys.stderr)
        return 2
    calls = CallLog(EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",)))
    ecs = EcsEndpoint.start(credentials=ECS_KEYS)
    ecs.handler = calls
    try:
        with fresh_database(server) as dsn, tempfile.TemporaryDirectory(prefix="szb-ha-") as tmp:
            result = run(args, dsn, ecs, calls, Path(tmp) / "broker")
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
