"""What `szb explain`, `szb get` and a job's events say is what the dispatcher decided (explain12).

A real `szb serve` (a local on-prem site, AWS on moto, `wait_model: projected`), jobs submitted
and explained over the CLI as a user types them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TERMINAL, job_yaml, md, wait_state
from tests.clouds.test_explain_live import events_so_far
from tests.clouds.test_projected_wait_live import (
    POLICY,
    TOKEN,
    TWO_PARTITIONS,
    first_event,
    hold_the_a800,
    setup,
    submit,
)
from tests.doubles.moto_front import MotoFront

T = TypeVar("T")

SLOW_ROUTE = POLICY.replace("provisioning_p95: 50s", "provisioning_p95: 10m")
"""A 10-minute provisioning p95 at AWS: a job with 5 min of max_wait left is past its last
responsible moment, where a projected start that is not now is counted late (the safety net)."""


@pytest.fixture
def slow_route(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(setup(moto.url, SLOW_ROUTE))


def explain(broker: BrokerProcess, path: Path) -> dict[str, Any]:
    out = szb(broker, TOKEN, "explain", str(path), "-o", "json")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout)["decision"])


def minutes_said(reason: str) -> int:
    """The minutes a reason gives for the projected on-prem start."""
    got = re.search(r"projected on-prem start in (\d+) min", reason)
    assert got is not None, reason
    return int(got.group(1))


def test_the_safety_net_says_the_projection_and_what_it_counted(
    slow_route: BrokerProcess, tmp_path: Path
) -> None:
    """The A800 frees in ~3 min (its holder's estimate); a job with 5 min of max_wait and a 10 min
    provisioning p95 is counted late by the safety net and bursts now. Its reason, explain's
    projection note and the placed event's note give the projected start (3 min), and the reason
    says it was counted as 15 min (5 left + 10 to provision), not a 15 min projection."""
    broker = slow_route
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = hold_the_a800(broker, stub, tmp_path, "3m")
        hurried = job_yaml(tmp_path, "hurried", estimate="1h", max_wait="5m")
        decision = explain(broker, hurried)
        assert decision["action"] == "run" and decision["burst"], decision
        ends_in = decision["projection"]["running"][0]["ends_in_s"]
        assert ends_in <= 180, decision
        said = minutes_said(decision["reasons"][0])
        assert abs(said * 60 - ends_in) <= 30, decision["reasons"]
        assert "counted as 15 min" in decision["reasons"][0], decision["reasons"]
        assert decision["projection"]["wait_s"] == pytest.approx(ends_in, abs=2), decision
        table = szb(broker, TOKEN, "explain", str(hurried)).stdout
        assert "projected wait on onprem/a800: 15 min" not in table, table
        [a800_row] = [line for line in table.splitlines() if "│ onprem " in line]
        assert " 15m " not in a800_row and re.search(r" [23]m ", a800_row), table  # its WAIT column
        job_id = submit(broker, hurried)
        placed = first_event(stub, job_id, "placed", timeout=60)
        assert "[burst]" in placed.message, placed.message
        # The event keeps the wait the decision counted and, in its note, the projection itself.
        assert placed.data["onprem_expected_wait_s"] >= 15 * 60, placed.data
        recorded = placed.data["projection"]
        assert recorded["wait_s"] == pytest.approx(recorded["running"][0]["ends_in_s"], abs=2), recorded
        for jid in (holder, job_id):
            stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md(TOKEN))


@pytest.fixture
def broker(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(setup(moto.url))


def test_explain_says_a_job_whose_deadline_can_no_longer_be_met_fails_as_the_dispatcher_fails_it(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """Due in 30 min with 1 h of work and the A800 busy: the dispatcher fails such a job at its
    first decision ('deadline ... can no longer be met'); explain said it would wait on-prem."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = hold_the_a800(broker, stub, tmp_path, "20m")
        due = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
        late = job_yaml(tmp_path, "late", estimate="1h", max_wait="1d", accelerators="A800")
        late.write_text(late.read_text() + f"deadline: '{due}'\n")
        decision = explain(broker, late)
        assert decision["action"] == "reject", decision
        assert "can no longer be met" in decision["reasons"][0], decision
        job_id = submit(broker, late)
        failed = wait_state(stub, job_id, TERMINAL, token=TOKEN)
        assert failed.state == job_pb2.JOB_STATE_FAILED and "can no longer be met" in failed.message
        assert decision["reasons"][0] == failed.message, (decision["reasons"], failed.message)
        stub.CancelJob(pb.CancelJobRequest(id=holder), metadata=md(TOKEN))


HOG, SMALL = "token-hog-0123456789abcdef", "token-small-0123456789abcd"
TWO_A800 = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800.replace("count_per_node: 1", "count_per_node: 2")
    + """\
tenants:
  - {id: hog, kind: university, entity_country: CN}
  - {id: small, kind: university, entity_country: CN}
burst:
  wait_model: projected
"""
    + on_moto.CN_RESIDENCY
)


def a800_job(folder: Path, name: str, gpus: int, sleep: float = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ncommand: [{JOB_PYTHON}, -c, 'import time; time.sleep({sleep})']\n"
        f"runtime_estimate: 1h\nmax_wait: 1d\n"
        f"resources:\n  accelerators: {{count: {gpus}, any_of: [A800]}}\n"
    )
    return path


@pytest.fixture
def shared(start_broker: StartBroker) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            TWO_A800,
            tokens={"hog": HOG, "small": SMALL},
            sites={"onprem": "{cancel_grace_s: 1}"},
            dispatch="poll_interval_s: 0.2, reconcile_interval_s: 1.0, requeue_scan_s: 1.0",
        )
    )


def test_explain_leaves_the_gpu_held_for_a_waiting_under_share_job_as_the_dispatcher_does(
    shared: BrokerProcess, tmp_path: Path
) -> None:
    """hog runs on one of two A800s; small's 2-GPU job waits, and fair share holds the free GPU
    for it. hog's next 1-GPU job waits (the dispatcher counts the held GPU as taken); explain
    said it would run now on the free GPU."""
    broker = shared
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        [holder] = submit_as(broker, HOG, a800_job(tmp_path, "holder", 1, sleep=120))
        wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING}, token=HOG)
        [big] = submit_as(broker, SMALL, a800_job(tmp_path, "big", 2))
        first = first_event_as(stub, big, "waiting", SMALL)
        assert first.data["action"] == "wait", first.message
        more = a800_job(tmp_path, "more", 1)
        for _ in range(3):  # between passes and within one
            out = szb(broker, HOG, "explain", str(more), "-o", "json")
            decision = json.loads(out.stdout)["decision"]
            assert decision["action"] == "wait", decision
            time.sleep(0.3)
        [job_id] = submit_as(broker, HOG, more)
        waiting = first_event_as(stub, job_id, "waiting", HOG)
        assert waiting.data["action"] == "wait", waiting.message
        queued = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md(HOG)).job
        assert queued.state == job_pb2.JOB_STATE_QUEUED, queued.message
        for jid, token in ((holder, HOG), (big, SMALL), (job_id, HOG)):
            stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md(token))


def submit_as(broker: BrokerProcess, token: str, path: Path) -> list[str]:
    out = szb(broker, token, "submit", str(path), "-o", "json")
    assert out.returncode == 0, out.stderr
    return [str(j["id"]) for j in json.loads(out.stdout)]


def first_event_as(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, kind: str, token: str
) -> job_pb2.JobEvent:
    deadline = time.monotonic() + 120  # a dispatcher pass on a loaded box can take longer than 30 s
    while True:
        found = [e for e in events_so_far(stub, job_id, token) if e.kind == kind]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {kind} event on {job_id}"
        time.sleep(0.2)


OWNER, BORROWER = "token-owner-0123456789abcd", "token-borrower-0123456789"
RECLAIMED = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800.replace("count_per_node: 1", "count_per_node: 2")
    + """\
tenants:
  - {id: owner, kind: institute, entity_country: CN, share: {quota: {onprem/a800: 1}}}
  - {id: borrower, kind: sme, entity_country: CN}
fair_share:
  reclaim: {grace: 1s, max_capacity_share: 0.5, window: 10m}
"""
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def reclaiming(start_broker: StartBroker) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            RECLAIMED,
            tokens={"owner": OWNER, "borrower": BORROWER},
            sites={"onprem": "{cancel_grace_s: 1}"},
        )
    )


def test_explain_and_the_waiting_reason_say_borrowed_work_is_reclaimed_for_the_owner(
    reclaiming: BrokerProcess, tmp_path: Path
) -> None:
    """The borrower fills both A800s; the owner's job (within its quota of one) waits while fair
    share preempts one borrowed job for it. Explain and the owner's waiting reason say so."""
    broker = reclaiming
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        borrowed = [submit_as(broker, BORROWER, a800_job(tmp_path, f"b{i}", 1, sleep=120))[0] for i in (0, 1)]
        for job_id in borrowed:
            wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING}, token=BORROWER)
        mine = a800_job(tmp_path, "mine", 1)
        out = szb(broker, OWNER, "explain", str(mine), "-o", "json")
        decision = json.loads(out.stdout)["decision"]
        assert decision["action"] == "wait", decision
        assert decision["reasons"][0].startswith("reclaiming 1 borrowed unit(s) on onprem/a800"), decision
        [job_id] = submit_as(broker, OWNER, mine)
        waiting = first_event_as(stub, job_id, "waiting", OWNER)
        assert waiting.message.startswith("reclaiming 1 borrowed unit(s) on onprem/a800"), waiting.message
        assert waiting.message.split(";")[0] == decision["reasons"][0].split(";")[0], waiting.message
        # One borrowed job is stopped for it; the owner is not told whose (tenant, job or attempt).
        assert [dict(v)["units"] for v in waiting.data["reclaim"]] == [1], waiting.data
        told = [waiting.message, str(waiting.data), json.dumps(decision)]
        assert not [t for t in told if "borrower" in t or any(j in t for j in borrowed)], told
        def preempted_now() -> list[str]:
            return [j for j in borrowed if "preempted" in {e.kind for e in events_so_far(stub, j, BORROWER)}]

        preempted = until(preempted_now, "no borrowed job was preempted")
        assert len(preempted) == 1, preempted
        for jid in [*borrowed, job_id]:
            stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md(OWNER if jid == job_id else BORROWER))


def until(check: Callable[[], T], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


STRICT = "token-strict-0123456789abc"
NO_BORROWING = TWO_A800.replace(
    "  - {id: small, kind: university, entity_country: CN}\n",
    "  - {id: small, kind: university, entity_country: CN}\n"
    "  - {id: strict, kind: institute, entity_country: CN,\n"
    "     share: {quota: {onprem/a800: 1}, may_borrow: false}}\n",
)


@pytest.fixture
def no_borrowing(start_broker: StartBroker) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(NO_BORROWING, tokens={"strict": STRICT}, sites={"onprem": "{cancel_grace_s: 1}"})
    )


def test_szb_get_gives_the_quota_reason_the_event_and_explain_give(
    no_borrowing: BrokerProcess, tmp_path: Path
) -> None:
    """strict uses its quota of one A800 and may not borrow the other, idle one: its next job
    waits. `szb get` said 'its tenant may not borrow beyond its quota', the waiting event and
    explain 'tenant strict has used its guaranteed quota ...': one reason, worded once."""
    broker = no_borrowing
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        [first] = submit_as(broker, STRICT, a800_job(tmp_path, "first", 1, sleep=120))
        wait_state(stub, first, {job_pb2.JOB_STATE_RUNNING}, token=STRICT)
        second = a800_job(tmp_path, "second", 1)
        decision = json.loads(szb(broker, STRICT, "explain", str(second), "-o", "json").stdout)["decision"]
        assert decision["action"] == "wait", decision
        [job_id] = submit_as(broker, STRICT, second)
        waiting = first_event_as(stub, job_id, "waiting", STRICT)
        assert waiting.message == decision["reasons"][0], (waiting.message, decision["reasons"])
        assert "guaranteed quota" in waiting.message, waiting.message

        def reason() -> str:
            got = json.loads(szb(broker, STRICT, "get", job_id, "-o", "json").stdout)
            row = got[0] if isinstance(got, list) else got
            said = str(row.get("pending_reason", ""))
            return said if "tenant order" in said else ""

        assert until(reason, "szb get never named the standing").startswith(waiting.message), reason()
        for jid in (first, job_id):
            stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md(STRICT))


@pytest.fixture
def two_partitions(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(setup(moto.url, TWO_PARTITIONS))


def test_waiting_for_a_cheaper_partition_names_the_deadline_that_bounds_the_wait(
    two_partitions: BrokerProcess, tmp_path: Path
) -> None:
    """The A800 (20 CNY/h) is free, the cheaper L20 (5 CNY/h) frees in ~10 min. A job due in 2 h
    with 1 h of work (a day of max_wait) waits for the L20: the 60 min before its latest start
    bound that wait, and the reason said 'within its max_wait'."""
    broker = two_partitions
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        sleep = "import time; time.sleep(120)"
        holder = submit(broker, job_yaml(tmp_path, "hold-l20", estimate="10m", max_wait="1d", command=sleep,
                                         accelerators="L20"))
        assert wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN).site == "onprem"
        due = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        job = job_yaml(tmp_path, "due", estimate="1h", max_wait="1d", accelerators="A800, L20")
        job.write_text(job.read_text() + f"deadline: '{due}'\n")
        decision = explain(broker, job)
        assert decision["action"] == "wait" and decision["onprem_partition"] == "onprem/l20", decision
        first = decision["reasons"][0]
        assert first.startswith("waiting for onprem/l20") and "max_wait" not in first, first
        assert "before its latest start" in first, first
        job_id = submit(broker, job)
        waiting = first_event(stub, job_id, "waiting")
        assert waiting.message.startswith("waiting for onprem/l20"), waiting.message
        assert "before its latest start" in waiting.message, waiting.message
        for jid in (holder, job_id):
            stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md(TOKEN))
