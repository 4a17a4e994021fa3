"""The broker's memory under large refused requests: many concurrent oversized `SubmitJob`s.

    python bench/large_requests.py --json

starts a broker (bench/fuzz.py's: two tenants, SQLite, a local site, `max_spec_bytes` the
policy's default 64 KiB) and sends `--calls` concurrent SubmitJob calls (30 by default), each a
spec of `--mb` MB (25 by default) in one env value, which the policy refuses. It samples the
broker's RSS every 20 ms meanwhile and prints `rss_before_mb`, `rss_peak_mb`, `rss_after_mb`
(1 s after the last answer), the status codes seen, which limit refused the calls
(`refused_by`: gRPC's `request_limit`, the `in_flight_budget` of large requests, the tenant's
`max_spec_bytes`), the first refusal's message and whether a normal submit still works
afterwards (`normal_submit_ok`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import Calls  # noqa: E402
from bench.fuzz import TOKENS, BrokerUnderTest  # noqa: E402
from broker.api import broker_service_pb2, job_pb2  # noqa: E402

METHOD = "/shangzhuang.broker.v1.BrokerService/SubmitJob"


def big_request(mb: float) -> bytes:
    """A SubmitJob of about `mb` MB: a valid spec with one huge env value."""
    spec = job_pb2.JobSpec(name="big", command=["true"])
    spec.runtime_estimate.seconds = 60
    spec.env["BLOB"] = "x" * int(mb * 1_000_000)
    return broker_service_pb2.SubmitJobRequest(job=spec).SerializeToString()


KINDS = {
    "Received message larger than max": "request_limit",
    "busy with large requests": "in_flight_budget",
    "max_spec_bytes": "max_spec_bytes",
}
"""Which limit refused a call, by a phrase of its message."""


async def flood(address: str, body: bytes, calls: int) -> tuple[Counter[str], Counter[str], str]:
    """`calls` concurrent SubmitJobs of `body`, each on its own channel (as separate clients):
    the status codes, the limits that refused them and the first refusal's message."""
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    bearer = (("authorization", f"Bearer {next(iter(TOKENS.values()))}"),)

    async def one() -> None:
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            await channel.unary_unary(METHOD)(body, metadata=bearer, timeout=120.0)

    made = Calls()
    await asyncio.gather(*(made.record(one) for _ in range(calls)))
    refused_by = Counter(next((k for p, k in KINDS.items() if p in d), "other") for d in made.details)
    return made.codes(), refused_by, made.details[0] if made.details else ""


def normal_submit(address: str) -> bool:
    """A small job is still taken after the flood."""
    spec = job_pb2.JobSpec(name="small", command=["true"])
    spec.runtime_estimate.seconds = 60
    body = broker_service_pb2.SubmitJobRequest(job=spec).SerializeToString()
    token = next(iter(TOKENS.values()))
    with grpc.insecure_channel(address) as channel:
        answer = channel.unary_unary(METHOD)(body, metadata=(("authorization", f"Bearer {token}"),))
    return broker_service_pb2.SubmitJobResponse.FromString(answer).created


def run(calls: int = 30, mb: float = 25.0) -> dict[str, Any]:
    """Start a broker, flood it with oversized submits while sampling its RSS; the figures."""
    folder = Path(tempfile.mkdtemp(prefix="szb-large-"))
    broker = BrokerUnderTest(folder)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set() and broker.alive():
            peak[0] = max(peak[0], broker.rss_mb())
            time.sleep(0.02)

    try:
        broker.start()
        time.sleep(1.0)
        before = broker.rss_mb()
        body = big_request(mb)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        codes, refused_by, message = asyncio.run(flood(broker.address, body, calls))
        time.sleep(1.0)
        done.set()
        sampler.join()
        after = broker.rss_mb()
        ok = normal_submit(broker.address)
    finally:
        done.set()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "calls": calls,
        "request_mb": round(len(body) / 1e6, 1),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(peak[0], 1),
        "rss_after_mb": round(after, 1),
        "codes": dict(sorted(codes.items())),
        "refused_by": dict(sorted(refused_by.items())),
        "first_refusal": message[:300],
        "normal_submit_ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30, help="concurrent SubmitJob calls (default 30)")
    parser.add_argument("--mb", type=float, default=25.0, help="size of each request in MB (default 25)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args.calls, args.mb)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
