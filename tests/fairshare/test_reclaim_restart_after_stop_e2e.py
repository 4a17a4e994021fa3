"""A reclaimed job starts again only after its preempted run has stopped (issue 14 review).

Reclaim sends the borrowed job SIGTERM and leaves it the grace to save its work; the broker
requeued the job at once, and with capacity free elsewhere (another partition here; a cloud for
a job that bursts) started it again while the old process was still saving: two copies of one
job, the new one resuming from a half-written checkpoint. Through a real `szb serve` on the
local executor: each run of a job appends to a shared log, and the victim's second start must
come after its first run's save.
"""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2, placement_pb2
from tests.brokerproc import running_broker, write_broker_folder
from tests.fairshare.local_site import a800_job, bearer, until
from tests.local_policy import a800, local_policy

TOKENS = {"owner": "token-owner-0123456789ab", "borrower": "token-borrower-0123456"}

POLICY = local_policy(
    "  - {id: owner, kind: institute, entity_country: CN, share: {quota: {local/a800: 1}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN}\n",
    a800(2),
    "{name: h800, accelerator: H800, count_per_node: 2, price_hour: 15.0}",
    rest="fair_share:\n  half_life: 0s\n  reclaim: {grace: 40s, max_capacity_share: 1, window: 10m}\n",
    objective=True,
)


def _code(log: Path) -> str:
    """Note the run's start; on SIGTERM, "save" until this job starts again elsewhere (or 25 s pass,
    or the test is over), then note the save and exit."""
    return textwrap.dedent(f"""\
        import os, signal, sys, time
        path = {str(log)!r}
        me = os.environ["SZB_JOB_ID"]
        def note(what):
            with open(path, "a") as f:
                f.write(f"{{what}} {{me}} {{os.getpid()}}\\n")
        def starts():
            with open(path) as f:
                return sum(1 for line in f if line.startswith(f"start {{me}} "))
        def term(*_):
            note("term")
            end = time.monotonic() + 25
            while starts() < 2 and time.monotonic() < end and not os.path.exists(path + ".over"):
                time.sleep(0.2)
            note("saved")
            sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        note("start")
        time.sleep(300)
        """)


def _job(name: str, code: str, accelerators: list[str]) -> job_pb2.JobSpec:
    msg = a800_job(name, code)
    del msg.resources.accelerators.any_of[:]
    msg.resources.accelerators.any_of.extend(accelerators)
    return msg


def test_a_reclaimed_job_starts_again_only_after_its_preempted_run_stopped(tmp_path: Path) -> None:
    # Jobs run sandboxed as the job user, who cannot enter the test's private tmp folder.
    marks = Path(tempfile.mkdtemp(prefix="szb-marks-"))
    marks.chmod(0o1777)
    log = marks / "runs.log"
    log.touch()
    log.chmod(0o666)
    config = write_broker_folder(tmp_path / "broker", POLICY, TOKENS)
    text = config.read_text()  # a full pass each second: the victim is decided within its grace
    config.write_text(text.replace("poll_interval_s: 0.2}", "poll_interval_s: 0.2, requeue_scan_s: 1}"))

    def lines() -> list[str]:
        return log.read_text().splitlines()

    def marked(what: str, job: str) -> int:
        return sum(x.startswith(f"{what} {job} ") for x in lines())

    with running_broker(config) as broker, grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        # Both borrowed jobs go to the cheaper A800 partition; the H800 one stays free.
        borrowed = [
            stub.SubmitJob(pb.SubmitJobRequest(job=_job(f"b{i}", _code(log), ["A800", "H800"])),
                           metadata=bearer(TOKENS, "borrower")).job.id
            for i in range(2)
        ]
        try:
            until("both borrowed jobs run", lambda: sum(x.startswith("start ") for x in lines()) == 2)
            owner = stub.SubmitJob(pb.SubmitJobRequest(job=_job("own", "print('owner ran')", ["A800"])),
                                   metadata=bearer(TOKENS, "owner")).job.id
            until("a borrowed job is preempted", lambda: any(x.startswith("term ") for x in lines()))
            victim = next(x.split()[1] for x in lines() if x.startswith("term "))
            assert victim in borrowed
            # While its first run saves, explain says what the dispatcher does: the job waits for it.
            told = stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=victim),
                                         metadata=bearer(TOKENS, "borrower")).explanation
            if marked("saved", victim) == 0:  # (the run is held saving until the job starts again)
                assert told.decision.action == placement_pb2.DECISION_ACTION_WAIT, told.decision
                assert "waiting for its preempted attempt" in told.decision.reasons[0]
            until("the victim starts again", lambda: marked("start", victim) == 2, timeout=120)
            until("the victim's first run saved", lambda: marked("saved", victim) >= 1)
            mine = [x.split()[0] for x in lines() if x.split()[1] == victim]
            assert mine == ["start", "term", "saved", "start"], lines()
            ran = job_pb2.JOB_STATE_SUCCEEDED
            until("the owner's job ran", lambda: stub.GetJob(
                pb.GetJobRequest(id=owner), metadata=bearer(TOKENS, "owner")).job.state == ran)
        finally:
            Path(f"{log}.over").touch()
            for j in borrowed:
                stub.CancelJob(pb.CancelJobRequest(id=j), metadata=bearer(TOKENS, "borrower"))
