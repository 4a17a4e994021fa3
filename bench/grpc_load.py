"""gRPC load benchmark: SubmitJob against a bare echo service in the same run.

    python bench/grpc_load.py --json [--seconds 5] [--concurrency 32]
        [--store sqlite|postgres] [--role all|api]

Both servers run as their own process: `szb serve` (role `all` on SQLite by default; with
`--store postgres` on a fresh database of the server `SZB_PG_DSN` names, and with `--role api`
an API replica, which needs PostgreSQL) and a grpc.aio echo server that decodes each
SubmitJobRequest and answers a SubmitJobResponse holding the job (the same messages, the same
(de)serialization, no store and no policy). The load comes from this process over loopback.

Prints one JSON object: echo and submit throughput (closed loop), `submit_ratio`, SubmitJobs
of 500 in jobs/s, p50/p99 of SubmitJob at half the echo's measured capacity (open loop; the
rate is `latency_rate_rps`, the fraction `load_point`) and at a fixed 500 requests/s
(`p50_ms_at_500rps`, `p99_ms_at_500rps`), the server CPU seconds spent per request in each
phase (the machine is shared: CPU per request moves less than wall figures), and the load
average before and after. Open-loop calls that fail are timed like the others (a timeout
counts at its full wait) and counted by status code in `failed`, `failed_at_500rps` and
`echo_failed`; `all_calls_ok` is false when any did, so a run that shed load is not read as fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import FLOODED_POLICY, Calls  # noqa: E402
from broker.api import broker_service_pb2 as pb  # noqa: E402
from broker.api import broker_service_pb2_grpc, job_pb2  # noqa: E402

ECHO_METHOD = "/bench.Echo/Echo"
SUBMIT_METHOD = "/shangzhuang.broker.v1.BrokerService/SubmitJob"
SUBMIT_BATCH_METHOD = "/shangzhuang.broker.v1.BrokerService/SubmitJobs"
FIXED_RATE_RPS = 500.0
"""The open-loop rate of `p99_ms_at_500rps`: one load point whatever the echo measured."""

POLICY = FLOODED_POLICY


async def serve_echo() -> None:
    """A bare gRPC server: decodes a SubmitJobRequest, answers a SubmitJobResponse with its job."""

    async def echo(request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        job = job_pb2.Job(id="j-echo", tenant="dev", spec=request.job)
        return pb.SubmitJobResponse(job=job, created=True)

    method = grpc.unary_unary_rpc_method_handler(
        echo,
        request_deserializer=pb.SubmitJobRequest.FromString,
        response_serializer=pb.SubmitJobResponse.SerializeToString,
    )
    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": method})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on port {port}", flush=True)
    await server.wait_for_termination()


def start(cmd: list[str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"serving on port (\d+)", line)
        if m:
            # Keep reading its output: a full pipe would block the server's logging mid-run.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(m.group(1))
    raise RuntimeError(f"{cmd} did not start")


def job(i: int, hold: bool = False) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=f"load-{i}",
        command=["python3", "-c", "import time; time.sleep(600)"] if hold else ["true"],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        max_wait=duration_pb2.Duration(seconds=86400),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A800"])),
        labels={"bench": "grpc-load"},
    )


async def closed_loop(call: object, make: object, seconds: float, concurrency: int) -> float:
    """Requests per second with `concurrency` callers each waiting for its answer."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            await call(make(w * 1_000_000 + i))  # type: ignore[operator]
            i += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done / (time.perf_counter() - started)


OpenLoop = Calls
"""An open-loop phase's calls (`bench._common.Calls`)."""


async def open_loop(call: object, make: object, rate: float, seconds: float) -> OpenLoop:
    """Latencies (ms) of requests sent at a fixed rate, whatever the answers do."""
    result = OpenLoop()
    tasks = []
    start_t = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start_t + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(result.record(lambda i=i: call(make(i)))))  # type: ignore[misc, operator]
    await asyncio.gather(*tasks)
    if result.failed:
        print(f"open loop at {rate:.0f}/s: {result.failed.total()} of {n} call(s) failed: "
              f"{dict(result.failed)}", file=sys.stderr)
    return result


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def batches(call: Any, body: bytes, seconds: float) -> tuple[float, int]:
    """Jobs per second of SubmitJobs of 500, one caller after the other; and the calls made."""
    jobs = calls = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await call(body, timeout=60)
        jobs += 500
        calls += 1
    return jobs / (time.perf_counter() - t0), calls


async def stop_holder(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> None:
    """Cancel the job holding the only slot, and wait until it ended."""
    # Its process would outlive the broker otherwise (in the api role nothing started it).
    await stub.CancelJob(pb.CancelJobRequest(id=job_id))
    for _ in range(150):  # the local site stops it (a grace period, then SIGKILL)
        state = (await stub.GetJob(pb.GetJobRequest(id=job_id))).job.state
        if state in (job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_SUCCEEDED):
            break
        await asyncio.sleep(0.1)


async def measure(
    echo: tuple[int, int], broker: tuple[int, int], seconds: float, concurrency: int
) -> dict[str, Any]:
    """Every phase on the echo first, then on the broker; `echo`/`broker` are (port, pid)."""
    out: dict[str, Any] = {}
    # Both servers get the same prepared bytes, and answers are taken as bytes: the figures
    # are the servers', not the load generator's protobuf work.
    prepared = [pb.SubmitJobRequest(job=job(i)).SerializeToString() for i in range(1000)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo[0]}") as ch:
        call: Any = ch.unary_unary(ECHO_METHOD)
        await call(prepared[0])
        cpu0 = cpu_s(echo[1])
        echo_rps = await closed_loop(lambda r: r, lambda i: call(prepared[i % 1000]), seconds, concurrency)
        out["echo_cpu_ms_per_request"] = round((cpu_s(echo[1]) - cpu0) * 1000 / (echo_rps * seconds), 3)
        rate = echo_rps / 2
        lat_echo = await open_loop(lambda r: r, lambda i: call(prepared[i % 1000]), rate, seconds)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{broker[0]}") as ch:
        stub = broker_service_pb2_grpc.BrokerServiceStub(ch)
        holder = (await stub.SubmitJob(pb.SubmitJobRequest(job=job(-1, hold=True)))).job  # the only slot
        await asyncio.sleep(1.0)
        call = ch.unary_unary(SUBMIT_METHOD)
        # Latency first, on a broker with a short queue; then the throughput runs.
        cpu0 = cpu_s(broker[1])
        lat = await open_loop(lambda r: r, lambda i: call(prepared[i % 1000]), rate, seconds)
        out["latency_cpu_ms_per_request"] = round((cpu_s(broker[1]) - cpu0) * 1000 / len(lat.latencies), 3)
        await asyncio.sleep(2.0)
        at_fixed = await open_loop(lambda r: r, lambda i: call(prepared[i % 1000]), FIXED_RATE_RPS, seconds)
        await asyncio.sleep(2.0)
        cpu0 = cpu_s(broker[1])
        submit_rps = await closed_loop(lambda r: r, lambda i: call(prepared[i % 1000]), seconds, concurrency)
        out["submit_cpu_ms_per_request"] = round((cpu_s(broker[1]) - cpu0) * 1000 / (submit_rps * seconds), 3)
        await asyncio.sleep(2.0)
        body = pb.SubmitJobsRequest(requests=[pb.SubmitJobRequest(job=job(i)) for i in range(500)])
        cpu0 = cpu_s(broker[1])
        batch_call: Any = ch.unary_unary(SUBMIT_BATCH_METHOD)
        batch_rate, calls = await batches(batch_call, body.SerializeToString(), seconds)
        out["batch_cpu_ms_per_job"] = round((cpu_s(broker[1]) - cpu0) * 1000 / (calls * 500), 4)
        await stop_holder(stub, holder.id)
    return {
        "echo_rps": round(echo_rps, 1),
        "submit_rps": round(submit_rps, 1),
        "submit_ratio": round(submit_rps / echo_rps, 3),
        "batch_jobs_per_s": round(batch_rate, 1),
        "latency_rate_rps": round(rate, 1),
        "load_point": 0.5,
        **lat.figures(),
        **at_fixed.figures("_at_500rps"),
        **lat_echo.figures(prefix="echo_"),
        "all_calls_ok": not (lat.failed or at_fixed.failed or lat_echo.failed),
        **out,
        # What the ratio would be with the CPU to itself: the shared machine moves wall figures.
        "submit_cpu_ratio": round(out["echo_cpu_ms_per_request"] / out["submit_cpu_ms_per_request"], 3),
        "concurrency": concurrency,
        "seconds": seconds,
    }


@contextlib.contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server `server_dsn` names; dropped afterwards."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"szb_bench_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def write_config(folder: Path, dsn: str | None) -> Path:
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "configs" / name, folder / name)
    (folder / "policy.yaml").write_text(POLICY)
    store = f"store: {{dsn: '{dsn}'}}\n" if dsn else ""
    (folder / "broker.yaml").write_text(
        textwrap.dedent("""\
        data_dir: data
        policy: policy.yaml
        agent_http_listen: null
        """)
        + store
    )
    return folder / "broker.yaml"


def run(args: argparse.Namespace, folder: Path, dsn: str | None) -> dict[str, Any]:
    procs: list[subprocess.Popen[str]] = []
    try:
        echo, echo_port = start([sys.executable, __file__, "--serve-echo"], ROOT)
        procs.append(echo)
        config = write_config(folder, dsn)
        serve = [sys.executable, "-m", "broker.cli", "serve", "--config", str(config)]
        broker, broker_port = start([*serve, "--listen", "127.0.0.1:0", "--role", args.role], ROOT)
        procs.append(broker)
        return asyncio.run(
            measure((echo_port, echo.pid), (broker_port, broker.pid), args.seconds, args.concurrency)
        )
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--role", choices=("all", "api"), default="all")
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo())
        return 0
    if args.role == "api" and args.store != "postgres":
        parser.error("--role api needs --store postgres (API replicas share one PostgreSQL)")
    server_dsn = os.environ.get("SZB_PG_DSN", "")
    if args.store == "postgres" and not server_dsn:
        parser.error('--store postgres needs SZB_PG_DSN (eval "$(scripts/pg-test.sh env)")')
    folder = Path(tempfile.mkdtemp(prefix="szb-bench-"))
    load_before = os.getloadavg()[0]
    try:
        if args.store == "postgres":
            with fresh_database(server_dsn) as dsn:
                result = run(args, folder, dsn)
        else:
            result = run(args, folder, None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "store": args.store,
        "role": args.role,
        **result,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
