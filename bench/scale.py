"""Store scale benchmark: a deep queue on SQLite and on PostgreSQL.

    python bench/scale.py --jobs 1000000 --json [--store sqlite|postgres|both] [--dsn DSN]

Per store: ingest time of `--jobs` queued jobs (batched `submit_many`), the store-side time of
the dispatcher's queue query (`list_jobs(states=[QUEUED], page_size=500)`, the first page and
a page at half depth) and of the queue head (`jobs_in_states`) at each checkpoint (1k / 100k /
1M queued by default), and whether their plans are an index range with a LIMIT; then the real
`szb serve` on the big store: restart-to-serving time (spawn until a ListJobs answers),
ListJobs page latency at depth over gRPC, and the process's RSS. PostgreSQL takes `--dsn` or
`SZB_PG_DSN` (a maintenance database: a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import FLOODED_POLICY  # noqa: E402
from broker.api import broker_service_pb2 as pb  # noqa: E402
from broker.api import broker_service_pb2_grpc  # noqa: E402
from broker.config import DispatchSettings  # noqa: E402
from broker.dispatch.queue_read import read_queue  # noqa: E402
from broker.model import JobSpec, JobState, TenantId  # noqa: E402
from broker.page_tokens import bind, job_list_print  # noqa: E402
from broker.store import JobStore, PostgresStore, SqliteStore, Submission  # noqa: E402

WINDOW = DispatchSettings().queue_window
TENANT = TenantId("dev")  # the built-in tenant of a broker without a tokens file
PAGE = 500  # the dispatcher's page size when it reads the queue
# The jobs ask for an accelerator no site has: they stay queued, nothing runs.
POLICY = FLOODED_POLICY


def job_spec(i: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": f"scale-{i % 1000}",
            "command": ["true"],
            "runtime_estimate": 3600,
            "resources": {"accelerators": {"count": 1, "any_of": ["A800"]}},
            "labels": {"bench": "scale", "shard": str(i % 16)},
        }
    )


def median_ms(fn: Callable[[], object], repeat: int = 15) -> float:
    fn()  # warm: the dispatcher's process has its specs cached too
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


# Store side ------------------------------------------------------------------------------------

QUEUE_SQL = (
    "SELECT j.id FROM jobs j WHERE j.state = ? AND j.id > ? ORDER BY j.id LIMIT ?",
    "SELECT j.id FROM jobs j WHERE j.state = ? ORDER BY j.id LIMIT ?",
)
"""The shape of `list_jobs(states=[QUEUED])` and `jobs_in_states([QUEUED])` (for the plans only)."""


def params(sql: str) -> tuple[object, ...]:
    return ("QUEUED", "", PAGE) if sql.count("?") == 3 else ("QUEUED", PAGE)


def plans(kind: str, target: str) -> dict[str, Any]:
    """Each queue query's plan, and whether it is flat (index range + LIMIT, no sort, no scan)."""
    out: dict[str, Any] = {}
    for name, sql in zip(("list_jobs", "jobs_in_states"), QUEUE_SQL, strict=True):
        if kind == "sqlite":
            with sqlite3.connect(target) as db:
                rows = db.execute("EXPLAIN QUERY PLAN " + sql, params(sql)).fetchall()
            text = "; ".join(r[-1] for r in rows)
            flat = "TEMP B-TREE" not in text and "USING" in text
        else:
            import psycopg

            with psycopg.connect(target, autocommit=True) as db:
                rows = db.execute("EXPLAIN " + sql.replace("?", "%s"), params(sql)).fetchall()
            text = "; ".join(r[0].strip() for r in rows)
            flat = "Seq Scan" not in text and "Sort" not in text and "Limit" in text
        out[name] = {"plan": text, "flat": flat}
    return out


def queue_times(store: JobStore, mid_token: str) -> dict[str, float]:
    queued = [JobState.QUEUED]
    live = [JobState.PLACING, JobState.PROVISIONING, JobState.RUNNING, JobState.PREEMPTED]
    return {
        "queue_first_page_ms": median_ms(lambda: store.list_jobs(None, states=queued, page_size=PAGE)),
        "queue_page_at_half_depth_ms": median_ms(
            lambda: store.list_jobs(None, states=queued, page_size=PAGE, page_token=mid_token)
        ),
        "queue_head_ms": median_ms(lambda: store.jobs_in_states(queued, limit=PAGE)),
        # What a restart's recovery reads (nothing is live here: it must not walk the queue).
        "recover_scan_ms": median_ms(lambda: store.jobs_in_states(live)),
        # Counts are O(jobs counted): the quota check (cached 1 s) and the queue-depth metric.
        "count_unfinished_ms": median_ms(lambda: store.count_unfinished(TENANT), repeat=3),
        "active_counts_ms": median_ms(store.active_counts, repeat=3),
        # What a full dispatch pass reads: the whole queue up to the window, then each tenant's head.
        "pass_read_ms": median_ms(lambda: asyncio.run(read_queue(store, WINDOW)), repeat=3),
        "pass_read_jobs": len(asyncio.run(read_queue(store, WINDOW))[0]),
    }


def ingest(
    store: JobStore, kind: str, target: str, total: int, batch: int, checkpoints: list[int]
) -> dict[str, Any]:
    """Submit `total` jobs in batches; queue figures at each checkpoint."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    done, spent = 0, 0.0
    marks: list[str] = []  # every 1000th job id: page tokens at depth
    out: dict[str, Any] = {"checkpoints": {}}
    for checkpoint in sorted(checkpoints):
        while done < min(checkpoint, total):
            n = min(batch, checkpoint - done)
            items = [Submission(job_spec(done + i)) for i in range(n)]
            t0 = time.perf_counter()
            [results] = store.submit_many([(TENANT, items)], now + timedelta(milliseconds=done))
            spent += time.perf_counter() - t0
            marks.extend(job.id for k, (job, _) in enumerate(results) if (done + k) % 1000 == 0)
            done += n
        figures: dict[str, Any] = {"ingest_s_so_far": round(spent, 1)}
        figures.update(queue_times(store, marks[len(marks) // 2]))
        figures["plans"] = plans(kind, target)
        out["checkpoints"][str(done)] = figures
        if done >= total:
            break
    out.update(jobs=done, ingest_s=round(spent, 1), ingest_jobs_per_s=round(done / spent))
    out["mid_token"] = marks[len(marks) // 2]
    out["deep_token"] = marks[-1]
    return out


# The real process --------------------------------------------------------------------------------


def write_config(folder: Path, dsn: str | None) -> Path:
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "configs" / name, folder / name)
    (folder / "policy.yaml").write_text(POLICY)
    store = f"store: {{dsn: {json.dumps(dsn)}}}\n" if dsn else ""
    config = folder / "broker.yaml"
    config.write_text(
        textwrap.dedent("""\
        data_dir: data
        policy: policy.yaml
        agent_http_listen: null
        """)
        + store
    )
    return config


def rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a live process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


@contextmanager
def serve(config: Path, role: str) -> Iterator[tuple[subprocess.Popen[str], float, str]]:
    """`szb serve` on the store; yields the process, seconds until it served (a ListJobs answered,
    or for the scheduler role, which serves no RPCs, its health port is up), and its address."""
    port_file = config.parent / "port"
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), "--listen", "127.0.0.1:0",
         "--role", role],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    port: list[str] = []
    threading.Thread(target=_pump, args=(proc, port, port_file), daemon=True).start()
    try:
        address = _wait_serving(proc, port, 600, port_file.with_suffix(".log"), rpc=role != "scheduler")
        yield proc, time.perf_counter() - t0, address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pump(proc: subprocess.Popen[str], port: list[str], log_to: Path) -> None:
    assert proc.stdout is not None
    with open(log_to.with_suffix(".log"), "w") as log:
        for line in proc.stdout:
            log.write(line)
            if not port and "serving on port" in line:
                port.append(line.rsplit("serving on port", 1)[1].split()[0])


def _wait_serving(
    proc: subprocess.Popen[str], port: list[str], timeout: float, log: Path, *, rpc: bool
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            time.sleep(0.5)
            raise RuntimeError("szb serve exited:\n" + log.read_text()[-3000:])
        if port and not rpc:
            return f"127.0.0.1:{port[0]}"
        if port:
            address = f"127.0.0.1:{port[0]}"
            with grpc.insecure_channel(address) as ch:
                stub = broker_service_pb2_grpc.BrokerServiceStub(ch)
                try:
                    stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=5)
                    return address
                except grpc.RpcError:
                    pass
        time.sleep(0.05)
    raise RuntimeError("szb serve did not answer ListJobs in time")


def process_figures(config: Path, mid: str, deep: str, settle_s: float, role: str) -> dict[str, Any]:
    """Restart-to-serving, ListJobs latency at depth and RSS of the real broker in `role`."""
    if role == "scheduler":
        with serve(config, role) as (proc, ready_s, _):
            time.sleep(settle_s)  # elected, then the dispatcher's first passes over the queue
            return {"restart_to_serving_s": round(ready_s, 2), f"after_{settle_s:g}s": rss_mb(proc.pid)}
    with serve(config, role) as (proc, ready_s, address), grpc.insecure_channel(address) as ch:
        stub = broker_service_pb2_grpc.BrokerServiceStub(ch)

        def page(after: str) -> Callable[[], object]:
            # The page after job `after` of the unfiltered listing, as the server's token names it.
            token = bind(after, job_list_print("", [], {}))
            return lambda: stub.ListJobs(pb.ListJobsRequest(page_size=100, page_token=token), timeout=60)

        out: dict[str, Any] = {"restart_to_serving_s": round(ready_s, 2)}
        out["list_first_page_ms"] = median_ms(page(""))
        out["list_page_at_half_depth_ms"] = median_ms(page(mid))
        out["list_page_at_end_ms"] = median_ms(page(deep))
        out["after_start"] = rss_mb(proc.pid)
        time.sleep(settle_s)  # the dispatcher's first passes over the deep queue
        out["list_first_page_ms_after_settle"] = median_ms(page(""))
        out[f"after_{settle_s:g}s"] = rss_mb(proc.pid)
    return out


def run_store(kind: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    checkpoints = [int(c) for c in args.checkpoints.split(",")] + [args.jobs]
    with scratch_store(kind, args, folder) as (store, target, dsn):
        out = ingest(store, kind, target, args.jobs, args.batch, [c for c in checkpoints if c <= args.jobs])
        out["bench_process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        store.close()
        mid, deep = out.pop("mid_token"), out.pop("deep_token")
        if not args.skip_serve:
            config = write_config(folder, dsn)
            # The api and scheduler roles need PostgreSQL; SQLite is the embedded `all` role.
            for role in ("all", "api", "scheduler") if dsn else ("all",):
                out[f"serve_{role}"] = process_figures(config, mid, deep, args.settle, role)
    return out


@contextmanager
def scratch_store(
    kind: str, args: argparse.Namespace, folder: Path
) -> Iterator[tuple[JobStore, str, str | None]]:
    """A fresh store: a SQLite file in `folder`, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        path = folder / "data" / "broker.db"
        yield SqliteStore(path), str(path), None
        return
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    admin_dsn = args.dsn or os.environ.get("SZB_PG_DSN")
    if not admin_dsn:
        raise SystemExit("PostgreSQL needs --dsn or SZB_PG_DSN (scripts/pg-test.sh env)")
    name = f"szb_scale_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    dsn = make_conninfo(admin_dsn, dbname=name)
    try:
        yield PostgresStore(dsn), dsn, dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--dsn", help="PostgreSQL maintenance DSN (default: $SZB_PG_DSN)")
    parser.add_argument("--batch", type=int, default=5000, help="jobs per submit_many transaction")
    parser.add_argument("--checkpoints", default="1000,100000", help="queue depths to time the queue at")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds the broker runs before RSS")
    parser.add_argument("--skip-serve", action="store_true", help="store side only")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    result: dict[str, Any] = {"jobs": args.jobs}
    for kind in kinds:
        folder = Path(tempfile.mkdtemp(prefix=f"szb-scale-{kind}-"))
        try:
            result[kind] = run_store(kind, args, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
