"""gRPC load benchmark: SubmitJob against a bare echo service in the same process setup.

    python bench/grpc_load.py --json [--seconds 5] [--concurrency 32]

Both servers run as their own process (`szb serve` with a SQLite store; a grpc.aio echo
server answering the same bytes back); the load comes from this process over loopback.
Prints one JSON object: echo_rps, submit_rps, submit_ratio, batch_jobs_per_s, p50/p99 of
SubmitJob at 500 requests/s (open loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.api import broker_service_pb2 as pb  # noqa: E402
from broker.api import broker_service_pb2_grpc, job_pb2  # noqa: E402

ECHO_METHOD = "/bench.Echo/Echo"
SUBMIT_METHOD = "/shangzhuang.broker.v1.BrokerService/SubmitJob"
SUBMIT_BATCH_METHOD = "/shangzhuang.broker.v1.BrokerService/SubmitJobs"

POLICY = """\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: local
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}
tenants:
  - {id: dev, kind: internal, entity_country: CN}
# A load test floods one tenant on purpose: lift its quotas (see README "Quotas").
limits: {max_queued_jobs: 10000000, submit_rate: 1000000, submit_burst: 10000000}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


async def serve_echo() -> None:
    """A bare gRPC server whose one method returns the request bytes."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
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
        command=["python3", "-c", "import time; time.sleep(3600)"] if hold else ["true"],
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


async def open_loop(call: object, make: object, rate: float, seconds: float) -> list[float]:
    """Latencies (ms) of requests sent at a fixed rate, whatever the answers do."""
    latencies: list[float] = []
    tasks = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await call(make(i))  # type: ignore[operator]
        latencies.append((time.perf_counter() - t0) * 1000)

    start_t = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start_t + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


async def measure(echo_port: int, broker_port: int, seconds: float, concurrency: int) -> dict[str, float]:
    sample = pb.SubmitJobRequest(job=job(0)).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as ch:
        echo = ch.unary_unary(ECHO_METHOD)
        await echo(sample)
        echo_rps = await closed_loop(echo, lambda i: sample, seconds, concurrency)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{broker_port}") as ch:
        stub = broker_service_pb2_grpc.BrokerServiceStub(ch)
        await stub.SubmitJob(pb.SubmitJobRequest(job=job(-1, hold=True)))  # takes the only slot
        await asyncio.sleep(1.0)
        # Like the echo run, the client sends bytes it prepared and takes the answer as bytes,
        # so both runs measure the server, not the load generator's protobuf work.
        raw_submit = ch.unary_unary(SUBMIT_METHOD)
        prepared = [pb.SubmitJobRequest(job=job(i)).SerializeToString() for i in range(1000)]

        def submit(i: int) -> object:
            return raw_submit(prepared[i % len(prepared)])

        # Latency first, on a broker with a short queue; then the throughput runs.
        lat = await open_loop(lambda req: req, submit, 500.0, seconds)
        await asyncio.sleep(2.0)
        submit_rps = await closed_loop(lambda req: req, submit, seconds, concurrency)
        await asyncio.sleep(2.0)
        raw_batch = ch.unary_unary(SUBMIT_BATCH_METHOD)
        batch = pb.SubmitJobsRequest(requests=[pb.SubmitJobRequest(job=job(i)) for i in range(500)])
        body = batch.SerializeToString()

        async def batches(callers: int) -> float:
            jobs = 0
            t0 = time.perf_counter()

            async def caller() -> None:
                nonlocal jobs
                while time.perf_counter() - t0 < seconds:
                    await raw_batch(body, timeout=60)
                    jobs += 500

            await asyncio.gather(*(caller() for _ in range(callers)))
            return jobs / (time.perf_counter() - t0)

        batch_rate = await batches(1)
    lat.sort()
    return {
        "echo_rps": round(echo_rps, 1),
        "submit_rps": round(submit_rps, 1),
        "submit_ratio": round(submit_rps / echo_rps, 3),
        "batch_jobs_per_s": round(batch_rate, 1),
        "p50_ms_at_500rps": round(statistics.median(lat), 2),
        "p99_ms_at_500rps": round(lat[int(len(lat) * 0.99) - 1], 2),
        "concurrency": concurrency,
        "seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo())
        return 0
    folder = Path(tempfile.mkdtemp(prefix="szb-bench-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        for name in ("accelerators.yaml", "regimes.yaml"):
            shutil.copy(ROOT / "configs" / name, folder / name)
        (folder / "policy.yaml").write_text(POLICY)
        (folder / "broker.yaml").write_text(
            textwrap.dedent("""\
            data_dir: data
            policy: policy.yaml
            agent_http_listen: null
            """)
        )
        echo, echo_port = start([sys.executable, __file__, "--serve-echo"], ROOT)
        procs.append(echo)
        broker, broker_port = start(
            [
                sys.executable,
                "-m",
                "broker.cli",
                "serve",
                "--config",
                str(folder / "broker.yaml"),
                "--listen",
                "127.0.0.1:0",
            ],
            ROOT,
        )
        procs.append(broker)
        result = asyncio.run(measure(echo_port, broker_port, args.seconds, args.concurrency))
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
