"""The shared job-table read (adapters.slurm._jobs) against the real slurmrestd: HTTP requests are
counted with an httpx event hook on the adapter's own client, nothing is mocked."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from adapters.slurm import SlurmAdapter
from broker.model import AttemptState
from tests.slurm.conftest import PARTITIONS, SITE, Tracker, launch

pytestmark = pytest.mark.slurm


class Requests:
    """Every request the adapter sends and every status it gets back, by method and path kind."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()

    @staticmethod
    def kind(request: httpx.Request) -> str:
        path = request.url.path.split("/slurm/", 1)[-1].split("/", 1)[-1]  # drop the version
        if path.startswith("job/") and path[4:].isdigit():
            path = "job/ID"
        if request.url.params.get("update_time") is not None:
            path += "?update_time"
        return f"{request.method} {path}"

    def on_request(self, request: httpx.Request) -> None:
        self.sent[self.kind(request)] += 1

    def on_response(self, response: httpx.Response) -> None:
        self.answers[f"{self.kind(response.request)} {response.status_code}"] += 1

    def reset(self) -> None:
        self.sent.clear()
        self.answers.clear()


def counted(slurm: Tracker, **config: Any) -> tuple[SlurmAdapter, Requests]:
    reqs = Requests()
    hooks = {"request": [reqs.on_request], "response": [reqs.on_response]}
    client = httpx.Client(timeout=5, event_hooks=hooks)
    cluster = slurm.cluster
    adapter = SlurmAdapter(SITE, {
        "url": cluster.url, "token": cluster.token, "user": cluster.user, "partitions": PARTITIONS,
        "output_dir": str(slurm.tmp / "out"), "broker_id": slurm.broker_id, "timeout_s": 5, **config,
    }, client=client)
    adapter.ping()  # version detection and a warm connection, not counted below
    reqs.reset()
    return adapter, reqs


def now() -> datetime:
    return datetime.now(UTC)


def test_one_jobs_read_serves_capacity_and_every_status_in_the_window(slurm: Tracker) -> None:
    adapter, reqs = counted(slurm, jobs_cache_s=30)
    ids = [slurm.submit(launch(("sleep", "30"), gpus=1), adapter) for _ in range(3)]
    reqs.reset()
    snap = adapter.capacity(now())  # first read after our submits: the whole table
    statuses = [adapter.status(i) for _ in range(5) for i in ids]
    adapter.capacity(now())
    assert reqs.sent == Counter({"GET jobs": 1, "GET nodes": 2}), reqs.sent  # statuses: from that read
    owned = adapter.list_owned()  # never from the window, but only "changed since?" (or the table)
    assert reqs.sent["GET jobs"] + reqs.sent["GET jobs?update_time"] == 2, reqs.sent
    assert {o.backend_id for o in owned} >= set(ids)
    assert all(s.state in (AttemptState.PENDING, AttemptState.RUNNING) for s in statuses)
    a800 = next(p for p in snap.partitions if p.name == "a800")
    assert (a800.total - a800.free) + a800.queued_jobs >= 3  # our 3 jobs, running or pending

    # our own cancel invalidates it: the next read is a fresh, full one and shows the cancellation
    adapter.cancel(ids[0], slurm.tokens[ids[0]])
    reqs.reset()
    deadline = time.monotonic() + 20
    while adapter.status(ids[0]).state is not AttemptState.CANCELLED:
        assert time.monotonic() < deadline, "cancelled job never showed CANCELLED"
        time.sleep(0.2)
    assert reqs.sent["GET jobs"] == 0 and reqs.sent["GET job/ID"] >= 1  # status alone: one job's record
    adapter.capacity(now())
    assert reqs.sent["GET jobs"] == 1, reqs.sent
    adapter.close()


def test_status_outside_the_window_reads_one_job_not_the_table(slurm: Tracker) -> None:
    adapter, reqs = counted(slurm, jobs_cache_s=0.2)
    backend_id = slurm.submit(launch(("sleep", "30"), gpus=1), adapter)
    adapter.capacity(now())
    time.sleep(0.3)
    reqs.reset()
    for _ in range(3):
        assert adapter.status(backend_id).state in (AttemptState.PENDING, AttemptState.RUNNING)
    assert reqs.sent == Counter({"GET job/ID": 3})
    adapter.close()


def test_unchanged_table_is_confirmed_by_a_conditional_read(slurm: Tracker) -> None:
    # same host: no clock margin needed; a full read only every 60 s
    adapter, reqs = counted(slurm, jobs_cache_s=0.1, jobs_full_read_s=60, jobs_clock_margin_s=0)
    first = adapter.list_owned()
    assert reqs.sent["GET jobs"] == 1
    # slurmctld keeps time in whole seconds: once the table has been quiet for a couple of them,
    # "changed since?" is answered 304 and the cached table is kept
    for _ in range(10):
        time.sleep(1.1)
        reqs.reset()
        again = adapter.list_owned()
        assert reqs.sent == Counter({"GET jobs?update_time": 1}), reqs.sent
        if reqs.answers["GET jobs?update_time 304"]:
            break
    else:
        pytest.fail(f"slurmrestd never answered 304: {reqs.answers}")
    assert again == first
    assert adapter.jobs.stats.unchanged_reads >= 1
    # our submit invalidates the table: a full read (no update_time) that lists the new job
    backend_id = slurm.submit(launch(("sleep", "30"), gpus=1), adapter)
    reqs.reset()
    assert backend_id in {o.backend_id for o in adapter.list_owned()}
    assert reqs.sent == Counter({"GET jobs": 1}), reqs.sent
    adapter.close()


def test_changed_table_is_read_again(slurm: Tracker) -> None:
    # a job submitted behind the adapter's back (another client) shows up once the window passes
    adapter, reqs = counted(slurm, jobs_cache_s=0.1, jobs_full_read_s=60, jobs_clock_margin_s=0)
    adapter.list_owned()
    other = slurm.make()  # same broker id, separate adapter: this one's cache knows nothing of it
    backend_id = slurm.submit(launch(("sleep", "30"), gpus=1), other)
    other.close()
    time.sleep(0.2)
    reqs.reset()
    assert backend_id in {o.backend_id for o in adapter.list_owned()}
    assert reqs.answers["GET jobs?update_time 200"] == 1, reqs.answers
    adapter.close()
