"""A full data dir beside a PostgreSQL store does not stop cloud launches.

Found by a held-out review of issue 11: a launch keeps its agent secret in
`data_dir/launching/` while it is in flight. With the store on PostgreSQL the data dir can fill on
its own (cloud jobs' output chunks are kept there); the secret's write then raised OSError out of
the dispatch pass ("dispatch pass failed"), every pass, and the job stayed PROVISIONING with an
attempt that no backend was ever asked to start, holding its slot, until the broker restarted. Its
output, kept there too, got HTTP 500 and an ERROR with a traceback for each chunk the agent sent.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import TERMINAL, Stub, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.crash.test_disk_full import _fill
from tests.crash.test_results_survive import until
from tests.crash.world import Broker
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront


def started_on(small_disk: Path, make_broker: MakeBroker, pg_dsn: str) -> Broker:
    """A broker on PostgreSQL whose data dir is the small disk, started."""
    broker = make_broker(store_dsn=pg_dsn)
    text = broker.config.read_text()
    broker.config.write_text(text.replace("data_dir: data\n", f"data_dir: {small_disk}\n"))
    broker.start()
    return broker


def test_a_cloud_job_launched_while_the_data_dir_is_full_runs_once(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path, small_disk: Path, pg_dsn: str
) -> None:
    book = tmp_path / "ledger.jsonl"
    broker = started_on(small_disk, make_broker, pg_dsn)
    with Instances(moto, ecs, tmp_path / "instances") as instances:
        with grpc.insecure_channel(broker.address) as channel:
            stub = Stub(channel)
            filler = _fill(small_disk)
            try:
                job = submit(stub, job_spec("full-data-dir", "A10G", ledger.command(book, "j", 1.0)))
                wait_state(stub, job.id, {job_pb2.JOB_STATE_RUNNING, *TERMINAL}, timeout=60)
                # Its output has no room either: the agent is told to send it again, in one line.
                assert broker.said("cannot keep cloud jobs' output in", timeout=60), "".join(broker.output)
            finally:
                filler.unlink()  # (its output, kept in the data dir too, then has room)
            final = wait_state(stub, job.id, TERMINAL, timeout=60)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 1, final.message
            assert final.exit_code == 0
        until(lambda: not instances.running(), what="the instance stayed up after its result was taken")
    assert ledger.runs(book)["j"] == ["start", "end"]
    assert broker.said("cannot keep launch secrets in"), "".join(broker.output)
    troubles = ("dispatch pass failed", "agent log chunk failed", "Traceback")
    assert not any(t in line for line in broker.output for t in troubles), "".join(broker.output)
