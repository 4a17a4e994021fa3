"""The real single-host Slurm clusters (scripts/slurm-cluster.sh) for the Slurm adapter tests.

`slurm_cluster` is the cluster of the test's file (see `Clusters`): the run's first, or its
second for the files tests/slurm/groups.py puts there.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import TransientError
from adapters.slurm import SlurmAdapter
from broker.model import (
    AcceleratorRequest,
    AttemptId,
    AttemptState,
    AttemptStatus,
    JobId,
    JobSpec,
    LaunchRequest,
    Offer,
    Resources,
    SiteId,
)
from tests.slurm.groups import FIRST, SECOND, SECOND_CLUSTER_ENV, slurm_scope

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"
PARTITIONS = {"ascend": "Ascend910B", "a800": "A800"}
SITE = SiteId("onprem-test")
USABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
"""`sinfo`'s states of a node that takes jobs (as scripts/slurm-cluster.sh's `nodes_ok` reads them)."""


@dataclass
class SlurmCluster:
    url: str
    token: str
    user: str
    env: dict[str, str]
    started_here: bool
    directory: Path | None = None
    rest_pidfile: Path | None = field(default=None)

    def restart(self) -> None:
        """(Re)start whatever daemon is missing: `start` is idempotent."""
        _run("start", self.env)

    def wait_usable(self, timeout: float = 90.0) -> None:
        """Wait until every node is usable (idle, mixed, allocated or completing): a node a test
        took down and resumed can stay down or not responding a while, and a submit in between
        is refused with ESLURM_NODE_NOT_AVAIL."""
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env={**os.environ, **self.env},
                                 capture_output=True, text=True, timeout=30, check=False)
            states = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and states and all(s in USABLE_NODE_STATES for s in states):
                return
            said = f"{out.stdout}{out.stderr}"
            assert time.monotonic() < deadline, f"nodes not usable after {timeout:.0f} s: {said}"
            time.sleep(0.5)


def _run(cmd: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([str(SCRIPT), cmd], capture_output=True, text=True, timeout=180,
                         env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"slurm-cluster.sh {cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _answers(url: str) -> bool:
    try:
        httpx.get(url.rstrip("/") + "/openapi/v3", timeout=3)
    except httpx.HTTPError:
        return False
    return True


def _parse_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


class Clusters:
    """The clusters of this session, by Slurm group (tests/slurm/groups.py).

    The first is the one named by SZB_SLURM_URL / SZB_SLURM_TOKEN when it answers, otherwise one
    this session installs and starts (root only) and stops at the end. The second is the one
    `SZB_SLURM_B_ENV` describes; without it (or when it does not answer) every file uses the first,
    and the scheduler keeps them all on one worker.
    """

    def __init__(self) -> None:
        self.by_group: dict[str, SlurmCluster] = {}
        self.started: SlurmCluster | None = None

    def of(self, path: str) -> SlurmCluster:
        group = slurm_scope(path) or FIRST
        if group not in self.by_group:
            self.by_group[group] = (group == SECOND and self._second()) or self._first()
        return self.by_group[group]

    def _first(self) -> SlurmCluster:
        if FIRST in self.by_group:
            return self.by_group[FIRST]
        url = os.environ.get("SZB_SLURM_URL", "")
        if url and os.environ.get("SZB_SLURM_TOKEN") and _answers(url):
            env = {k: v for k, v in os.environ.items()
                   if k.startswith(("SZB_SLURM", "SLURM_CONF")) and not k.startswith("SZB_SLURM_B_")}
            self.by_group[FIRST] = _cluster(env, started=False)
            return self.by_group[FIRST]
        if os.geteuid() != 0:
            pytest.skip("no Slurm cluster at SZB_SLURM_URL and not root: cannot start one")
        _run("install")
        t0 = time.monotonic()
        _run("start")
        print(f"slurm test cluster started in {time.monotonic() - t0:.1f}s")
        self.started = self.by_group[FIRST] = _cluster(_parse_env(_run("env")), started=True)
        return self.started

    def _second(self) -> SlurmCluster | None:
        path = os.environ.get(SECOND_CLUSTER_ENV, "")
        if not path or not os.path.exists(path):
            return None
        env = _parse_env(Path(path).read_text(encoding="utf-8"))
        if not (env.get("SZB_SLURM_URL") and env.get("SZB_SLURM_TOKEN") and _answers(env["SZB_SLURM_URL"])):
            return None
        return _cluster(env, started=False)


def _cluster(env: dict[str, str], started: bool) -> SlurmCluster:
    directory = Path(env["SZB_SLURM_DIR"]) if env.get("SZB_SLURM_DIR") else None
    return SlurmCluster(
        url=env["SZB_SLURM_URL"], token=env["SZB_SLURM_TOKEN"], user=env.get("SZB_SLURM_USER", "root"),
        env=env, started_here=started, directory=directory,
        rest_pidfile=directory / "run" / "slurmrestd.pid" if directory else None,
    )


@pytest.fixture(scope="session")
def slurm_clusters() -> Iterator[Clusters]:
    clusters = Clusters()
    yield clusters
    if clusters.started:
        _run("stop")


@pytest.fixture(scope="module")
def slurm_cluster(slurm_clusters: Clusters, request: pytest.FixtureRequest) -> SlurmCluster:
    """The cluster of this test's file: two files of one cluster never run at once."""
    return slurm_clusters.of(request.path.relative_to(ROOT).as_posix())


class Tracker:
    """An adapter for one test plus the jobs it submitted (cancelled at teardown)."""

    def __init__(self, cluster: SlurmCluster, tmp: Path) -> None:
        self.cluster = cluster
        self.tmp = tmp
        self.broker_id = f"szb-test-{uuid.uuid4().hex[:8]}"
        self.adapter = self.make()
        self.submitted: list[str] = []
        self.tokens: dict[str, str] = {}
        """Each submitted job's token: a cancel stops only the job its token marks."""

    def make(self, **overrides: Any) -> SlurmAdapter:
        config: dict[str, Any] = {
            "url": self.cluster.url, "token": self.cluster.token, "user": self.cluster.user,
            "partitions": PARTITIONS, "output_dir": str(self.tmp / "out"), "broker_id": self.broker_id,
            "timeout_s": 5,
        }
        config.update(overrides)
        return SlurmAdapter(SITE, config)

    def submit(self, request: LaunchRequest, adapter: SlurmAdapter | None = None) -> str:
        backend_id = (adapter or self.adapter).submit(request)
        self.submitted.append(backend_id)
        self.tokens[backend_id] = request.token
        return backend_id

    def wait(self, backend_id: str, states: set[AttemptState], timeout: float = 60) -> AttemptStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.adapter.status(backend_id)
            if status.state in states:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"job {backend_id} still {status} after {timeout}s")
            time.sleep(0.25)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[Tracker]:
    slurm_cluster.wait_usable()  # (whatever an earlier test did to a node, this one gets it whole)
    tracker = Tracker(slurm_cluster, tmp_path)
    yield tracker
    # make sure nothing of ours keeps GPUs busy (and that a test that broke slurmrestd left it up)
    adapter = tracker.make()
    try:
        adapter.ping()
    except TransientError:
        slurm_cluster.restart()
    for backend_id in tracker.submitted:
        adapter.cancel(backend_id, tracker.tokens[backend_id])
    for owned in adapter.list_owned():
        adapter.cancel(owned.backend_id, owned.token or "teardown")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(o.state.terminal for o in adapter.list_owned()):
            break
        time.sleep(0.25)


def launch(
    command: tuple[str, ...],
    *,
    partition: str = "a800",
    gpus: int = 1,
    runtime: timedelta = timedelta(minutes=2),
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> LaunchRequest:
    accel = PARTITIONS[partition]
    spec = JobSpec(
        name="slurm-test", command=command, runtime_estimate=runtime, env=env or {},
        resources=Resources(cpus=1, memory_gb=0.25,
                            accelerators=AcceleratorRequest(count=gpus, any_of=(accel,))),
    )
    offer = Offer(site=SITE, instance_type=partition, accelerator=accel, count=4, price_per_hour=1.0)
    tok = token or f"tok-{uuid.uuid4().hex}"
    return LaunchRequest(job_id=JobId(f"job-{tok[-8:]}"), attempt_id=AttemptId(f"att-{tok[-8:]}"),
                         token=tok, spec=spec, offer=offer)
