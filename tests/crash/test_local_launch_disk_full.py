"""A local launch that meets the broker's own full disk counts against neither the site nor the job.

Found by a held-out review of issue 11: with the store on PostgreSQL and the data dir full, each
local launch failed with OSError (no space left on device), which was counted as the site's
failure and the job's attempt: three in 15 s opened the local site's circuit breaker for five
minutes, so once the disk had room again no local job started for minutes, and a job with fewer
attempts left failed for good. Issue 11: failures on the broker's side never count toward
breakers or a job's attempts. The site now waits a short block and the attempts are broker-side.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import TERMINAL, Stub, events, get, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.test_disk_full import _fill
from tests.crash.test_escrow_disk_full import started_on


def test_a_local_launch_on_a_full_data_dir_opens_no_breaker_and_spends_no_attempt(
    make_broker: MakeBroker, tmp_path: Path, small_disk: Path, pg_dsn: str
) -> None:
    book = tmp_path / "ledger.jsonl"
    broker = started_on(small_disk, make_broker, pg_dsn)
    with grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        filler = _fill(small_disk)
        try:
            spec = job_spec("full-local", "A800", ledger.command(book, "j", 0.5), max_wait_s=3600)
            job = submit(stub, spec)
            deadline = time.monotonic() + 60
            while sum(e.kind == "attempt_failed" for e in events(stub, job.id)) < 2:
                assert time.monotonic() < deadline, "the launch never met the full disk"
                time.sleep(0.2)
            assert get(stub, job.id).state == job_pb2.JOB_STATE_QUEUED  # (not FAILED: no attempt spent)
        finally:
            filler.unlink()
        # Room again: the job starts within the short block, not after a breaker's five minutes.
        final = wait_state(stub, job.id, TERMINAL, timeout=60)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
    assert ledger.runs(book)["j"] == ["start", "end"]
    assert not broker.said("circuit breaker of site onprem opened", timeout=0), "".join(broker.output)
