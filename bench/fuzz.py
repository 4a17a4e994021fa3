"""Fuzz a real `szb serve` over gRPC: random bytes, mutated requests, out-of-range fields.

    python bench/fuzz.py --n 20000 --json

starts a broker (two tenants, SQLite, a local site) in a scratch folder, stores 40 jobs, sends
`--n` hostile requests to every RPC of BrokerService and AgentService (raw bytes through
`channel.unary_unary` with identity serializers, so nothing is checked client-side), then
reads the 40 jobs back. It prints `requests`, `internal`, `unknown`, `crashes` (the broker
process died), `rss_growth_mb` (broker RSS after the run minus before it), `tracebacks` (in
the broker's log), `intact` (of the 40 jobs), the status codes seen and, for any INTERNAL or
UNKNOWN, the first cases (method and base64 request) to replay them. `tests/e2e/test_fuzz.py`
runs a few thousand cases of the same generator in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf import message_factory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import local_policy  # noqa: E402
from broker.api import agent_service_pb2, broker_service_pb2, job_pb2  # noqa: E402
from broker.auth import hash_token  # noqa: E402
from broker.serde import spec_from_proto  # noqa: E402

TOKENS = {"fuzz-a": "token-fuzz-a-0123456789", "fuzz-b": "token-fuzz-b-9876543210"}
SEEDED = 40

POLICY = local_policy(
    "  - {id: fuzz-a, kind: university, entity_country: CN}\n"
    "  - {id: fuzz-b, kind: institute, entity_country: CN}\n",
    "{name: a800, accelerator: A800, count_per_node: 2, price_hour: 14.0}",
    "{name: cpu, price_hour: 1.0, cpus_per_node: 4}",
    rest="# Valid submissions the fuzzer happens to make are capped, so the run measures the API edge;\n"
    "# reads are not, so every case reaches the handler that checks it.\n"
    "limits: {submit_burst: 300, submit_rate: 5, read_rate: 1000000, read_burst: 10000000}\n",
)

FD = _descriptor.FieldDescriptor
_INT_EDGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (0.0, -0.0, 1e-300, -1.0, 1e308, float("inf"), float("-inf"), float("nan"), 3.5)
_STRINGS = (
    "",
    "x",
    "--privileged",
    "SZB_TOKEN",
    "j-00000000000000000000",
    "\x00",
    "a" * 70,
    "名字",
    "\U0001f600",
    "' OR 1=1 --",
    "../../etc/passwd",
    "%s%n",
)


@dataclass(frozen=True)
class Method:
    path: str
    request: type[_message.Message]
    streaming: bool


def methods() -> list[Method]:
    """Every unary-request RPC of the broker's public services."""
    out = []
    for module, service in ((broker_service_pb2, "BrokerService"), (agent_service_pb2, "AgentService")):
        desc = module.DESCRIPTOR.services_by_name[service]
        for m in desc.methods:
            if m.client_streaming:
                continue
            cls = message_factory.GetMessageClass(m.input_type)
            out.append(Method(f"/{desc.full_name}/{m.name}", cls, m.server_streaming))
    return out


def valid_spec(rng: random.Random, i: int) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=f"job-{i}", command=["true"], labels={"batch": str(i % 3)})
    msg.runtime_estimate.seconds = rng.choice([60, 600, 3600])
    if rng.random() < 0.3:
        msg.resources.accelerators.count = 1
        msg.resources.accelerators.any_of.append("A800")
    if rng.random() < 0.3:
        msg.env["SEED"] = str(i)
    return msg


class Fuzzer:
    """Builds hostile request bodies; deterministic for a seed."""

    def __init__(self, seed: int, job_ids: list[str]) -> None:
        self.rng = random.Random(seed)
        self.job_ids = job_ids
        self.methods = methods()
        self.budget = 0
        """Repeated and map entries left for the message being built (bounds its size)."""

    # -- field values ---------------------------------------------------------------------
    def _scalar(self, f: _descriptor.FieldDescriptor) -> Any:
        r = self.rng
        if f.type in _INT_EDGES:
            lo, hi = _INT_EDGES[f.type]
            if f.type == FD.TYPE_ENUM and r.random() < 0.5:
                values = [v.number for v in f.enum_type.values]
                return r.choice(values)
            return r.choice([lo, hi, 0, -1, 1, r.randint(lo, hi)])
        if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            value = r.choice(_FLOATS)
            return value if f.type == FD.TYPE_DOUBLE or abs(value) < 3e38 or value != value else 3e38
        if f.type == FD.TYPE_BOOL:
            return r.random() < 0.5
        if f.type == FD.TYPE_STRING:
            if f.name in ("id", "job_id", "attempt_id") and self.job_ids and r.random() < 0.5:
                return r.choice(self.job_ids) + ("-a1" if f.name == "attempt_id" else "")
            if r.random() < 0.05:
                return "y" * r.choice([129, 5000, 100_000])
            return r.choice(_STRINGS)
        if f.type == FD.TYPE_BYTES:
            return r.randbytes(r.choice([0, 3, 40]))
        raise AssertionError(f"unhandled field type {f.type}")

    def _take(self, count: int) -> int:
        count = max(0, min(count, self.budget))
        self.budget -= count
        return count

    def fill(self, msg: _message.Message, depth: int = 0) -> None:
        """Set a random subset of fields to edge values (nested messages recursively)."""
        r = self.rng
        for f in msg.DESCRIPTOR.fields:
            if r.random() < 0.45:
                continue
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                target = getattr(msg, f.name)
                key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
                for _ in range(self._take(r.choice([1, 3, 70, 2000]))):
                    key = self._scalar(key_f) if r.random() < 0.3 else f"k{r.randrange(10**6)}"
                    if value_f.message_type is None:
                        target[key] = self._scalar(value_f)
                    else:
                        self.fill(target[key], depth + 1)
            elif f.is_repeated:
                target = getattr(msg, f.name)
                count = r.choice([1, 2, 5, 300, 3000]) if f.message_type is None else r.choice([1, 2, 20])
                for _ in range(self._take(count)):
                    if f.message_type is None:
                        target.append(self._scalar(f))
                    elif depth < 3:
                        self.fill(target.add(), depth + 1)
            elif f.message_type is not None:
                if depth < 4:
                    self.fill(getattr(msg, f.name), depth + 1)
            else:
                setattr(msg, f.name, self._scalar(f))

    # -- cases ----------------------------------------------------------------------------
    def structured(self, method: Method) -> bytes:
        """A well-formed request with edge values in some fields (often a valid spec inside)."""
        self.budget = 5000
        msg = method.request()
        if "job" in msg.DESCRIPTOR.fields_by_name and self.rng.random() < 0.6:
            msg.job.CopyFrom(valid_spec(self.rng, self.rng.randrange(10**6)))  # type: ignore[attr-defined]
            if self.rng.random() < 0.7:
                self.fill(msg.job)  # type: ignore[attr-defined]
        elif "requests" in msg.DESCRIPTOR.fields_by_name and self.rng.random() < 0.5:
            for _ in range(self.rng.choice([1, 2, 10])):
                item = msg.requests.add()  # type: ignore[attr-defined]
                item.job.CopyFrom(valid_spec(self.rng, self.rng.randrange(10**6)))
                if self.rng.random() < 0.5:
                    self.fill(item.job)
        else:
            self.fill(msg)
        return msg.SerializeToString()

    def mutated(self, method: Method) -> bytes:
        """A serialized request with bytes flipped, cut, repeated or spliced."""
        data = bytearray(self.structured(method) or b"\x0a\x00")
        r = self.rng
        for _ in range(r.choice([1, 2, 4, 8])):
            op = r.randrange(5)
            pos = r.randrange(len(data)) if data else 0
            if op == 0 and data:
                data[pos] ^= 1 << r.randrange(8)
            elif op == 1 and data:
                data[pos] = r.choice([0x00, 0xFF, 0x80, 0x7F, 0x0A, 0x12])
            elif op == 2:
                del data[pos : pos + r.randrange(1, 8)]
            elif op == 3:
                data[pos:pos] = r.randbytes(r.randrange(1, 16))
            else:
                data[pos:pos] = data[max(0, pos - 20) : pos] * r.randrange(1, 4)
        return bytes(data)

    def random_bytes(self) -> bytes:
        r = self.rng
        return r.randbytes(r.choice([0, 1, 2, 7, 64, 1024, 65536]))

    def case(self) -> tuple[Method, bytes, str | None]:
        """One request: (method, body, token or None for no authorization)."""
        r = self.rng
        method = r.choice(self.methods)
        pick = r.random()
        if pick < 0.3:
            body = self.random_bytes()
        elif pick < 0.6:
            body = self.mutated(method)
        else:
            body = self.structured(method)
        token = None if r.random() < 0.05 else r.choice(list(TOKENS.values()))
        return method, body, token


@dataclass
class Outcome:
    codes: Counter[str] = field(default_factory=Counter)
    bad: list[dict[str, str]] = field(default_factory=list)


async def send(address: str, cases: list[tuple[Method, bytes, str | None]], concurrency: int) -> Outcome:
    """Send every case over one channel with identity serializers; count the status codes."""
    out = Outcome()
    sem = asyncio.Semaphore(concurrency)
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:

        async def one(method: Method, body: bytes, token: str | None) -> None:
            metadata = (("authorization", f"Bearer {token}"),) if token else None
            async with sem:
                try:
                    if method.streaming:
                        call = channel.unary_stream(method.path)(body, metadata=metadata, timeout=1.0)
                        async for _ in call:
                            pass
                    else:
                        await channel.unary_unary(method.path)(body, metadata=metadata, timeout=10.0)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    failed = exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
                    if failed and len(out.bad) < 20:
                        out.bad.append(
                            {
                                "method": method.path,
                                "code": code,
                                "details": (exc.details() or "")[:300],
                                "request_b64": base64.b64encode(body[:4096]).decode(),
                            }
                        )
            out.codes[code] += 1

        await asyncio.gather(*(one(*c) for c in cases))
    return out


class BrokerUnderTest:
    """`szb serve` in a scratch folder, with its log collected."""

    def __init__(self, folder: Path, dsn: str | None = None) -> None:
        self.folder = folder
        for name in ("accelerators.yaml", "regimes.yaml"):
            shutil.copy(ROOT / "configs" / name, folder / name)
        (folder / "policy.yaml").write_text(POLICY)
        lines = [f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items()]
        (folder / "tokens.yaml").write_text("tokens:\n" + "".join(lines))
        (folder / "broker.yaml").write_text(
            textwrap.dedent("""\
            data_dir: data
            policy: policy.yaml
            tokens_file: tokens.yaml
            agent_http_listen: null
            metrics_listen: null
            dispatch: {poll_interval_s: 0.5}
            """)
            + (f"store: {{dsn: '{dsn}'}}\n" if dsn else "")
        )
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> None:
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--config", str(self.folder / "broker.yaml"),
             "--listen", "127.0.0.1:0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                m = re.search(r"serving on port (\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("broker did not start:\n" + "".join(self.log))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        assert self.proc is not None
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"VmRSS:\s+(\d+) kB", text)
        return int(m.group(1)) / 1024 if m else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def seed_jobs(address: str, n: int = SEEDED) -> dict[str, tuple[str, job_pb2.JobSpec]]:
    """Store `n` jobs (half per tenant); returns id -> (token, spec as sent)."""
    from broker.api import broker_service_pb2_grpc

    rng = random.Random(7)
    stored: dict[str, tuple[str, job_pb2.JobSpec]] = {}
    with grpc.insecure_channel(address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        for i in range(n):
            token = list(TOKENS.values())[i % 2]
            spec = valid_spec(rng, i)
            job = stub.SubmitJob(
                broker_service_pb2.SubmitJobRequest(job=spec, client_id=f"seed-{i}"),
                metadata=(("authorization", f"Bearer {token}"),),
            ).job
            stored[job.id] = (token, spec)
    return stored


def intact(address: str, stored: dict[str, tuple[str, job_pb2.JobSpec]]) -> int:
    """How many stored jobs read back with the very spec they were submitted with."""
    from broker.api import broker_service_pb2_grpc

    ok = 0
    with grpc.insecure_channel(address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        for job_id, (token, spec) in stored.items():
            job = stub.GetJob(
                broker_service_pb2.GetJobRequest(id=job_id), metadata=(("authorization", f"Bearer {token}"),)
            ).job
            ok += spec_from_proto(job.spec) == spec_from_proto(spec)
    return ok


def run(
    n: int, seed: int = 1, concurrency: int = 32, batch: int = 2000, dsn: str | None = None
) -> dict[str, Any]:
    """Start a broker, seed it, fuzz it with `n` requests, check it; the figures as a dict.

    With `dsn` (an empty PostgreSQL database) the broker keeps its state there, not in SQLite.
    """
    folder = Path(tempfile.mkdtemp(prefix="szb-fuzz-"))
    broker = BrokerUnderTest(folder, dsn)
    try:
        broker.start()
        stored = seed_jobs(broker.address)
        fuzzer = Fuzzer(seed, list(stored))
        time.sleep(1.0)
        rss_before = broker.rss_mb()
        outcome = Outcome()
        started = time.perf_counter()
        sent = 0
        while sent < n and broker.alive():
            cases = [fuzzer.case() for _ in range(min(batch, n - sent))]
            part = asyncio.run(send(broker.address, cases, concurrency))
            outcome.codes.update(part.codes)
            outcome.bad.extend(part.bad[: 20 - len(outcome.bad)])
            sent += len(cases)
        seconds = time.perf_counter() - started
        crashed = not broker.alive()
        rss_after = broker.rss_mb() if not crashed else rss_before
        kept = intact(broker.address, stored) if not crashed else 0
    finally:
        broker.stop()
        log = "".join(broker.log)
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "requests": sent,
        "internal": outcome.codes.get("INTERNAL", 0),
        "unknown": outcome.codes.get("UNKNOWN", 0),
        "crashes": int(crashed),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "tracebacks": log.count("Traceback"),
        "log_kb": round(len(log.encode()) / 1024, 1),
        "intact": f"{kept}/{len(stored)}",
        "seconds": round(seconds, 1),
        "codes": dict(sorted(outcome.codes.items())),
        "failures": outcome.bad,
    }


def main(argv: list[str] | None = None, *, run_fn: Callable[..., dict[str, Any]] = run) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="requests to send (default 20000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--dsn", help="an empty PostgreSQL database to use as the store (default SQLite)")
    args = parser.parse_args(argv)
    result = run_fn(args.n, seed=args.seed, concurrency=args.concurrency, dsn=args.dsn)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    failed = result["internal"] or result["unknown"] or result["crashes"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
