"""`szb explain` right after a broker (re)start stands a tenant where the dispatcher will.

Fair share's book was filled only by a dispatch pass (and a pass with an empty queue stops
before it), so until one ran, explain used an empty book: a tenant that had held the whole
partition for a day, or still held it through the restart, was explained as if it had used
nothing (`at 0.0× its share`). A real `szb serve` on the local executor, a real SQLite store.
"""

from __future__ import annotations

import json
import math
import textwrap
import time
from pathlib import Path

from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.store import FairUsage, SqliteStore
from tests.brokerproc import JOB_PYTHON, BrokerProcess, stub_for, szb, write_broker_folder
from tests.fairshare.test_reclaim_budget_e2e import until
from tests.local_policy import a800, local_policy

TOKENS = {"heavy": "token-heavy-0123456789", "light": "token-light-0123456789"}
POLICY = local_policy(
    "  - {id: heavy, kind: university, entity_country: CN}\n"
    "  - {id: light, kind: university, entity_country: CN}\n",
    a800(2, 10.0),
    site="lab",
    rest="fair_share: {half_life: 1d}\n",
    catalogs=False,
)


def job_file(folder: Path, name: str, until_file: Path, gpus: int) -> Path:
    code = f"import os, time\\nwhile not os.path.exists({str(until_file)!r}): time.sleep(0.1)"
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        command: ["{JOB_PYTHON}", "-c", "{code}"]
        resources:
          accelerators: {{count: {gpus}, any_of: [A800]}}
        runtime_estimate: 20m
        """))
    return path


def share_ratio(broker: BrokerProcess, tenant: str) -> float:
    """The tenant's share ratio where live explain (ExplainPlacement) stands a 1-A800 job of it."""
    spec = job_pb2.JobSpec(name="ask", command=["true"], runtime_estimate=duration_pb2.Duration(seconds=1200))
    spec.resources.accelerators.count = 1
    spec.resources.accelerators.any_of.append("A800")
    md = (("authorization", f"Bearer {TOKENS[tenant]}"),)
    with stub_for(broker.address) as stub:
        ex = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=spec), metadata=md)
    return float(json.loads(ex.explanation.decision_json)["fair_share"]["share_ratio"])


def state(broker: BrokerProcess, tenant: str, job_id: str) -> str:
    out = szb(broker, TOKENS[tenant], "get", job_id, "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return str((got[0] if isinstance(got, list) else got)["state"])


def test_explain_at_start_reads_the_usage_the_store_kept(tmp_path: Path) -> None:
    config = write_broker_folder(tmp_path / "broker", POLICY, TOKENS)
    (config.parent / "data").mkdir()
    store = SqliteStore(config.parent / "data" / "broker.db")
    try:  # what a broker kept before its restart: `heavy` held both A800s on average
        held = 2 * 86400 / math.log(2)
        store.save_fair_usage(FairUsage(86400.0, time.time(), {"heavy": (held, 0.0, 0.0)}))
    finally:
        store.close()
    broker = BrokerProcess(config)
    broker.start()
    try:
        # Usage (held now + history) / 2 = 1 of 2 A800s, alone in the queue: half its share.
        # On main: 0.0 (the queue is empty, so no pass ever read the usage back).
        assert abs(share_ratio(broker, "heavy") - 0.5) < 0.01
        assert share_ratio(broker, "light") == 0.0
    finally:
        broker.stop()


def test_explain_after_a_restart_counts_work_still_running(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_folder(tmp_path / "broker", POLICY, TOKENS))
    broker.start()
    marks = tmp_path / "marks"
    marks.mkdir()
    marks.chmod(0o755)  # the job may run under its own uid
    release = marks / "go"
    running = job_file(tmp_path, "both", release, 2)
    out = szb(broker, TOKENS["heavy"], "submit", str(running), "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    job_id = str((got[0] if isinstance(got, list) else got)["id"])
    try:
        until(lambda: state(broker, "heavy", job_id) == "RUNNING", lambda: "heavy's job runs")
        before = share_ratio(broker, "heavy")
        assert before >= 0.5  # it holds both A800s
        broker.kill()  # the job runs on (the local executor re-attaches to it)
        broker.restart()
        # On main: 0.0 until a job is queued and a pass adopts the running attempt.
        assert abs(share_ratio(broker, "heavy") - before) < 0.01
    finally:
        release.touch()
        szb(broker, TOKENS["heavy"], "cancel", job_id)
        broker.stop()
