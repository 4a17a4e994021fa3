"""The local executor keeps the adapter contract (`tests.adapter_contract`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import Adapter, CapacityError, UnsupportedError
from adapters.local import LocalAdapter
from broker.model import AcceleratorRequest, Resources, SiteId
from tests.adapter_contract import NOW, AdapterContract, Refusal, default_request


class TestLocalContract(AdapterContract):
    unknown_id = "att-nobody-started-this"
    queues_jobs = False
    settle_s = 15.0

    @pytest.fixture
    def adapter(self, tmp_path: Path) -> LocalAdapter:
        return LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "cpus": 2,
                                              "accelerators": {"A800": 2}})

    @pytest.fixture
    def refused(self, adapter: Adapter) -> Refusal:
        offer = next(o for o in adapter.offers(NOW) if o.accelerator == "A800")
        request = default_request(offer, "tok-too-large")
        too_large = request.spec.model_copy(update={"resources": Resources(
            cpus=1, memory_gb=0.25, accelerators=AcceleratorRequest(count=4, any_of=("A800",)))})
        return Refusal(lambda: adapter.submit(request.model_copy(update={"spec": too_large})),
                       UnsupportedError)


def test_a_shrunk_partition_counts_slots_held_beyond_its_new_size(tmp_path: Path) -> None:
    """A job holding slots 2-3 of 4 when a reload makes the partition 2: nothing more starts."""
    adapter = LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"),
                                             "partitions": [{"accelerator": "A800", "count_per_node": 4}]})
    offer = next(o for o in adapter.offers(NOW) if o.accelerator == "A800")
    two = default_request(offer, "tok-0").spec.model_copy(update={"resources": Resources(
        cpus=1, memory_gb=0.25, accelerators=AcceleratorRequest(count=2, any_of=("A800",)))})
    started = []
    try:
        for i in range(2):
            request = default_request(offer, f"tok-{i}").model_copy(update={"spec": two})
            started.append(adapter.submit(request))
        adapter.cancel(started[0], "tok-0")  # slots 0-1 free; the second job keeps 2-3
        adapter.reconfigure({"data_dir": str(tmp_path / "data"),
                             "partitions": [{"accelerator": "A800", "count_per_node": 2}]})
        assert [(p.total, p.free) for p in adapter.capacity(NOW).partitions if p.accelerator] == [(2, 0)]
        with pytest.raises(CapacityError):
            adapter.submit(default_request(offer, "tok-2").model_copy(update={"spec": two}))
    finally:
        for i, backend_id in enumerate(started):
            adapter.cancel(backend_id, f"tok-{i}")


def test_capacity_names_every_job_holding_units_and_not_one_that_ended(tmp_path: Path) -> None:
    """Reclaim keeps other jobs off a victim's units from the reading that shows them free, not
    from the status poll after it (`broker.dispatch.offers.ended_attempts`): the reading must say
    which jobs still hold units, and that it names them all."""
    from broker.dispatch.offers import OfferReading, ended_attempts
    from broker.model import Attempt, AttemptState, JobId

    adapter = LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "accelerators": {"A800": 2}})
    offer = next(o for o in adapter.offers(NOW) if o.accelerator == "A800")
    ids = [adapter.submit(default_request(offer, f"tok-{i}")) for i in range(2)]
    try:
        snap = adapter.capacity(NOW)
        assert snap.started_complete and sorted(snap.started) == sorted(ids)
        adapter.cancel(ids[0], "tok-0")
        snap = adapter.capacity(NOW)
        assert snap.started == (ids[1],) and [p.free for p in snap.partitions if p.accelerator] == [1]
        reading = OfferReading([], started=frozenset(("local", b) for b in snap.started),
                               started_complete=frozenset({"local"}))
        live = [Attempt(id=f"att-{i}", job_id=JobId(f"job-{i}"), site=SiteId("local"), offer=offer,
                        token=f"tok-{i}", state=AttemptState.RUNNING, backend_id=b, created_at=NOW,
                        updated_at=NOW, number=1)
                for i, b in enumerate(ids)]
        assert ended_attempts(reading, live) == {"att-0"}  # still RUNNING in the store
        # A site whose reading does not name all it runs (Slurm) says nothing ended.
        assert ended_attempts(OfferReading([]), live) == frozenset()
    finally:
        adapter.cancel(ids[1], "tok-1")


def test_a_job_killed_by_a_signal_says_so_and_names_its_memory_limit(tmp_path: Path) -> None:
    """Held-out review: `resources.memory_gb: 1e-9` was accepted and the job died with exit code
    139 and no reason: the local executor's RLIMIT_DATA of one byte, a SIGSEGV at start."""
    import time

    from broker.model import AttemptState
    from tests.brokerproc import JOB_PYTHON

    adapter = LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "cpus": 2})
    offer = next(o for o in adapter.offers(NOW) if o.accelerator is None)

    def ended(token: str, command: tuple[str, ...], memory_gb: float) -> tuple[int | None, str]:
        request = default_request(offer, token)
        spec = request.spec.model_copy(update={"command": command,
                                               "resources": Resources(cpus=1, memory_gb=memory_gb)})
        backend_id = adapter.submit(request.model_copy(update={"spec": spec}))
        deadline = time.monotonic() + 30
        while (status := adapter.status(backend_id)).state == AttemptState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status.state == AttemptState.FAILED, status
        return status.exit_code, status.cause

    code, cause = ended("tok-tiny", (JOB_PYTHON, "-c", "print(1)"), 1e-9)
    assert code == 139 and cause == ("killed by SIGSEGV; it may have outgrown its memory limit "
                                     "(resources.memory_gb: 1e-09)"), cause
    assert ended("tok-term", ("sh", "-c", "kill -TERM $$"), 1.0) == (143, "killed by SIGTERM")
    assert ended("tok-exit", ("sh", "-c", "exit 3"), 1.0) == (3, "")
