"""A split broker whose only site is the Alibaba ECS double (instances need their agent)."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from google.protobuf import duration_pb2

from broker.api import job_pb2
from broker.auth import hash_token
from broker.model import Attempt, JobId
from broker.store import PostgresStore
from tests.brokerproc import JOB_PYTHON, copy_hardware_files
from tests.clouds.conftest import ECS_KEYS
from tests.clouds.e2e_helpers import TOKEN
from tests.doubles.ecs_endpoint import EcsCloud, Reply
from tests.ha.conftest import LEASE_S, RENEW_S, Cluster

OPERATOR_TOKEN = "token-lab-prometheus-0123456789"
"""An operator token of the cluster's tokens file: what Prometheus scrapes /metrics with."""

A10 = "ecs.gn7i-c8g1.2xlarge"
HEADER = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone"
)
POLICY = """\
version: 1
currency: CNY
objective: {price: 1.0, wait_hour_cost: 40}
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: ali-bj
    adapter: alibaba
    region: cn-beijing
    country: CN
    residency: cn-mainland
    catalog: {file: ali-bj.csv, region: cn-beijing, currency: CNY, spot: false}
tenants:
  - {id: lab, kind: partner, entity_country: SG}
burst:
  sites:
    ali-bj: {max_provisioning: 500}
  heartbeat_timeout: 1h
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def cloud_cluster(
    folder: Path,
    dsn: str,
    ecs_address: str,
    *,
    lease: tuple[float, float] = (LEASE_S, RENEW_S),
    access_key: str = "access_key_id: ak-test",
) -> Cluster:
    """A cluster config (policy, catalog, tokens) pointing its one site at the ECS double.

    `access_key` is the site's key setting (`access_key_id_from_env: VAR` gives each process
    a key of its own, so the double can tell whose calls it gets)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy_hardware_files(folder)
    (folder / "ali-bj.csv").write_text(f"{HEADER}\n{A10},A10,1,8,30,13.90,4.00,cn-beijing,cn-beijing-i\n")
    (folder / "policy.yaml").write_text(POLICY)
    (folder / "tokens.yaml").write_text(
        f"tokens:\n  - {{tenant: lab, sha256: {hash_token(TOKEN)}}}\n"
        f"  - {{tenant: lab, role: operator, name: prometheus, sha256: {hash_token(OPERATOR_TOKEN)}}}\n"
    )
    site = (
        f"{{endpoint: '{ecs_address}', protocol: http, {access_key}, "
        f"access_key_secret: {ECS_KEYS['ak-test']}, image_id: m-szb-base, live_prices: false}}"
    )
    (folder / "broker.yaml").write_text(
        textwrap.dedent(f"""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {{poll_interval_s: 0.2, reconcile_interval_s: 2}}
        store: {{dsn: '{dsn}'}}
        ha: {{lease_s: {lease[0]}, renew_s: {lease[1]}}}
        sites:
          ali-bj: {site}
        """)
    )
    cluster = Cluster.__new__(Cluster)
    cluster.config, cluster.dsn, cluster.nodes = folder / "broker.yaml", dsn, []
    return cluster


def gpu_spec(name: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", "print('hi')"],
        runtime_estimate=duration_pb2.Duration(seconds=600),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10"])),
    )


class SlowCloud:
    """The ECS double, answering RunInstances only after `delay_s` (launches stay in flight)."""

    def __init__(self, inner: EcsCloud, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.run_calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, req: Any) -> Reply:
        if req.action == "RunInstances":
            with self._lock:
                token = req.params.get("ClientToken", "")
                self.run_calls[token] = self.run_calls.get(token, 0) + 1
            time.sleep(self.delay_s)
        return self.inner(req)


class HeldCloud:
    """The ECS double, holding each RunInstances answer (the instance exists) until `gate` opens."""

    def __init__(self, inner: EcsCloud) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.run_calls = 0
        self._lock = threading.Lock()

    def __call__(self, req: Any) -> Reply:
        reply = self.inner(req)
        if req.action == "RunInstances":
            with self._lock:
                self.run_calls += 1
            self.gate.wait(timeout=60)  # a test that failed before opening it must not hang the double
        return reply


def attempts(dsn: str, job_id: str) -> list[Attempt]:
    store = PostgresStore(dsn)
    try:
        return store.attempts_for(JobId(job_id))
    finally:
        store.close()


def wait_until(what: str, check: Any, timeout: float = 30.0, shown: Any = None) -> None:
    """Wait for `check()`; on a timeout the failure carries `shown()` (say, a process's log)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            tail = f":\n{shown()[-8000:]}" if shown is not None else ""
            raise AssertionError(f"timed out waiting until {what}{tail}")
        time.sleep(0.1)
