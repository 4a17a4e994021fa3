"""What the benches that run a broker share: its policy on the local executor, and the tally of
the gRPC calls they make to it.

Benches do not import `tests` (they run from a bare checkout's `bench/`): `local_policy` is their
twin of `tests/local_policy.py`.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc


def local_policy(tenants: str, *partitions: str, rest: str = "") -> str:
    """One site, `local`, on the local executor in CN with `partitions` (flow mappings), then
    `tenants` (YAML list lines) and `rest` (top-level sections) as given, then CN residency."""
    lines = "".join(f"      - {p}\n" for p in partitions)
    return f"""\
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
{lines}tenants:
{tenants}{rest}compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""


ONE_A800 = "{name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}"

FLOODED_POLICY = local_policy(
    "  - {id: dev, kind: internal, entity_country: CN}\n",
    ONE_A800,
    rest="# A load test floods one tenant on purpose: lift its quotas (see README \"Quotas\").\n"
    "limits: {max_queued_jobs: 10000000, submit_rate: 1000000, submit_burst: 10000000}\n",
)
"""`dev` (a broker's tenant without a tokens file) on one A800, its quotas lifted: the load benches'."""


@dataclass
class Calls:
    """gRPC calls made: every call's latency (ms), failed ones included, the failures by status
    code, and each failure's details in the order they came."""

    latencies: list[float] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    async def record(self, start: Callable[[], Awaitable[Any]]) -> None:
        """Make one call (`start()`) and await it, timed from before it starts, answered or failed."""
        t0 = time.perf_counter()
        try:
            await start()
        except grpc.aio.AioRpcError as exc:
            # Timed too: leaving a failure out made p99 the successes' alone (a shed call is
            # the slowest a caller sees, not a call that never happened).
            self.failed[exc.code().name] += 1
            self.details.append(exc.details() or "")
        self.latencies.append((time.perf_counter() - t0) * 1000)

    def codes(self) -> Counter[str]:
        """Calls by status code, `OK` for those answered."""
        return Counter({"OK": len(self.latencies) - self.failed.total()}) + self.failed

    def figures(self, suffix: str = "", prefix: str = "") -> dict[str, Any]:
        """`{prefix}p50_ms{suffix}`, `...p99_ms...` and `{prefix}failed{suffix}` (code -> count)."""
        return {
            f"{prefix}p50_ms{suffix}": round(statistics.median(self.latencies), 2),
            f"{prefix}p99_ms{suffix}": percentile(self.latencies, 0.99),
            f"{prefix}failed{suffix}": dict(sorted(self.failed.items())),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, rounded to 0.01."""
    ordered = sorted(values)
    return round(ordered[max(0, int(len(ordered) * q) - 1)], 2)
