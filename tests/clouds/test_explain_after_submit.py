"""Right after a submit, the dispatcher's first decision is the one `szb explain` gave (explain12).

A real `szb serve` (local A800, AWS on moto, `wait_model: projected`). A job submitted between
two full passes is decided in a pass over new jobs only; explain puts a job at its place in the
fair-share order (fair share, then priority and due time), and so must that first decision.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import job_yaml, md, wait_state
from tests.clouds.test_projected_wait_live import TOKEN, first_event, setup, submit
from tests.doubles.moto_front import MotoFront


@pytest.fixture
def broker(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    # A full pass every 5 s: a job submitted just after one is decided in a pass over new jobs.
    dispatch = "poll_interval_s: 0.2, reconcile_interval_s: 1.0, requeue_scan_s: 5"
    return start_broker(replace(setup(moto.url), dispatch=dispatch))


def test_a_new_job_due_sooner_is_first_decided_where_explain_places_it(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """The A800 frees in 20 min; 'late' (1 h of work, 3 h of max_wait) waits for it. A probe
    with 70 min of max_wait is due first: explain has nothing ahead of it and says it waits on-prem
    20 min. Its first decision put it behind 'late' (80 min: late, bursting at its last
    responsible moment) until the next full pass moved it ahead."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        sleep = "import time; time.sleep(300)"
        holder = submit(broker, job_yaml(tmp_path, "holder", estimate="20m", max_wait="1d", command=sleep,
                                         accelerators="A800"))
        wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN)
        late = submit(broker, job_yaml(tmp_path, "late", estimate="1h", max_wait="3h", accelerators="A800"))
        assert first_event(stub, late, "waiting").message.startswith("waiting on-prem")
        probe = job_yaml(tmp_path, "probe", estimate="1h", max_wait="70m")
        deadline = time.monotonic() + 120  # full passes are 5 s apart, more on a loaded box
        while True:  # until a full pass has placed 'late' in the fair-share order
            asked = time.monotonic()
            decision = json.loads(szb(broker, TOKEN, "explain", str(probe), "-o", "json").stdout)["decision"]
            if decision["projection"]["queue_ahead_jobs"] == 0:
                break
            assert time.monotonic() < deadline, decision
            time.sleep(0.2)
        assert decision["action"] == "wait" and decision["reasons"][0].startswith("waiting on-prem"), decision
        job_id = submit(broker, probe)
        waiting = first_event(stub, job_id, "waiting")
        between = time.monotonic() - asked  # the holder's end came this much nearer meanwhile
        assert waiting.message.startswith("waiting on-prem"), (waiting.message, decision["reasons"])
        assert waiting.data["projection"]["queue_ahead_jobs"] == 0, waiting.data
        expected = decision["onprem_expected_wait_s"]
        got = waiting.data["onprem_expected_wait_s"]
        assert expected - between - 60 <= got <= expected + 60, (between, waiting.data)
        for jid in (holder, late, job_id):
            stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md(TOKEN))
