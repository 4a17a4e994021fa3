"""`bench/grpc_load.py` reports failed calls and times them: its p99 is every caller's, not the
successes' alone. Found by a held-out review (999 CANCELLED calls were left out of the figures)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from types import ModuleType

import grpc

from tests.brokerproc import ROOT


def _grpc_load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grpc_load", ROOT / "bench" / "grpc_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["grpc_load"] = module  # (its dataclass looks its module up while it is defined)
    spec.loader.exec_module(module)
    return module


def test_an_open_loop_counts_and_times_its_failed_calls() -> None:
    bench = _grpc_load()

    async def call(i: int) -> None:  # every other call is shed after a slow 50 ms
        if i % 2:
            await asyncio.sleep(0.05)
            raise grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata())

    result = asyncio.run(bench.open_loop(lambda r: r, call, 100.0, 0.4))
    assert len(result.latencies) == 40 and dict(result.failed) == {"CANCELLED": 20}
    figures = result.figures("_at_500rps")
    assert figures["p99_ms_at_500rps"] >= 50 and figures["failed_at_500rps"] == {"CANCELLED": 20}


def test_a_short_run_reports_failures_and_p99_at_500_requests_per_second() -> None:
    out = subprocess.run(
        [sys.executable, "bench/grpc_load.py", "--json", "--seconds", "1", "--concurrency", "4"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-3000:]
    result = json.loads(out.stdout)
    for key in ("p99_ms", "p99_ms_at_500rps", "p50_ms_at_500rps", "echo_p99_ms"):
        assert result[key] > 0, (key, result)
    for key in ("failed", "failed_at_500rps", "echo_failed"):
        assert isinstance(result[key], dict), (key, result)
    calls_failed = any(result[k] for k in ("failed", "failed_at_500rps", "echo_failed"))
    assert result["all_calls_ok"] is not calls_failed, result
