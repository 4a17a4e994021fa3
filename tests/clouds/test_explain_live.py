"""`szb explain --server` against a running broker: what it ticks is what the dispatcher does.

A local on-prem site (one A800, 14 CNY/h) and an AWS site on moto (A10G at 1.006 USD/h, so
placement alone prefers AWS). Live explain must decide with the dispatcher's inputs: free
on-prem capacity, the tenant's money and the live attempts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import job_yaml, md, wait_state
from tests.doubles.moto_front import MotoFront
from tests.job_events import Events, events_until, has

POOR, RICH = "token-poor-lab-0123456789", "token-rich-lab-0123456789"
CN = "token-cn-lab-0123456789"
POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + """\
tenants:
  - {id: poor-lab, kind: partner, entity_country: SG, monthly_budget: 0}
  - {id: rich-lab, kind: partner, entity_country: SG, monthly_budget: 5000}
  - {id: cn-lab, kind: university, entity_country: CN}
compliance:
  regime: us-ac-2023
  residency:
    zones: {cn-mainland: {countries: [CN]}}
  export:
    id: us-export-3a090
    operator_countries: [US]
    tenant_country_groups: ["D:5"]
    classes: [3A090.a, 3A090.b]
    reason: "{class} hardware ({accelerator}) at {site}: tenant {tenant} is in {tenant_group}"
"""
)


def setup(moto_url: str) -> on_moto.BrokerSetup:
    return on_moto.BrokerSetup(
        POLICY,
        tokens={"poor-lab": POOR, "rich-lab": RICH, "cn-lab": CN},
        sites={"onprem": "{cancel_grace_s: 1}", "aws-east": on_moto.aws_on_moto(moto_url, heartbeat_s=1)},
        catalogs={
            "aws-east.csv": on_moto.catalog(
                "g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a",
                "p5.48xlarge,H100,8,192,2048,98.32,,us-east-1,us-east-1a",
            )
        },
    )


@pytest.fixture
def broker(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(setup(moto.url))


def test_live_explain_ticks_the_decision_and_uses_money(broker: BrokerProcess, tmp_path: Path) -> None:
    first = job_yaml(tmp_path, "holder", max_wait="1d", command="import time; time.sleep(60)")
    # Placement alone ranks AWS first (7.24 CNY/h < 14); the decision runs on the free A800.
    out = szb(broker, POOR, "explain", str(first), "-o", "json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["placement_best"]["site"] == "aws-east"
    assert body["decision"]["action"] == "run" and body["chosen"]["site"] == "onprem"
    assert body["offers"][0]["site"] == "onprem"
    table = szb(broker, POOR, "explain", str(first))
    ticked = [line for line in table.stdout.splitlines() if "✔" in line]
    assert len(ticked) == 1 and "onprem" in ticked[0] and "aws-east" not in ticked[0], table.stdout
    assert "7.24" not in ticked[0] and "1.01 USD" in table.stdout and "14.00 CNY" in table.stdout

    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        submitted = szb(broker, POOR, "submit", str(first), "-o", "json")
        holder = json.loads(submitted.stdout)[0]["id"]
        running = wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING}, token=POOR)
        assert running.site == "onprem"

        # The A800 is taken: an impatient job would burst, but poor-lab's budget is 0.
        impatient = job_yaml(tmp_path, "impatient", max_wait="0s")
        live = szb(broker, POOR, "explain", str(impatient), "-o", "json")
        decision = json.loads(live.stdout)["decision"]
        assert decision["action"] == "wait", decision
        assert any("budget" in r for r in decision["reasons"]), decision
        assert decision["currency"] == "CNY"
        # The dispatcher, given the same job, decides the same.
        job_id = json.loads(szb(broker, POOR, "submit", str(impatient), "-o", "json").stdout)[0]["id"]
        deadline = time.monotonic() + 120  # a dispatcher pass; more than 15 s on a loaded box
        while True:
            waits = [e for e in events_so_far(stub, job_id, POOR) if e.kind == "waiting"]
            if waits or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert waits and "budget" in waits[-1].message

        # rich-lab may burst: explain says so, and the placed event labels both currencies.
        rich = szb(broker, RICH, "explain", str(impatient), "-o", "json")
        rich_decision = json.loads(rich.stdout)["decision"]
        assert rich_decision["action"] == "run" and rich_decision["burst"], rich_decision
        assert rich_decision["currency"] == "CNY" and rich_decision["price_currency"] == "USD"
        burst_id = json.loads(szb(broker, RICH, "submit", str(impatient), "-o", "json").stdout)[0]["id"]
        wait_state(stub, burst_id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}, token=RICH)
        history = events_so_far(stub, burst_id, RICH, until=has("placed"))
        placed = next(e for e in history if e.kind == "placed")
        data = dict(placed.data)
        assert data["currency"] == "CNY" and data["price_currency"] == "USD"
        assert data["cash"] == pytest.approx(1.006 * 7.2 * 10, rel=0.01)
        for jid, token in ((holder, POOR), (job_id, POOR), (burst_id, RICH)):
            stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md(token))
        # `szb watch` keeps the bracketed tags rich would take for markup.
        watched = szb(broker, RICH, "watch", burst_id)
        assert "[burst]" in watched.stdout, watched.stdout


def events_so_far(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    token: str,
    until: Callable[[Events], bool] | None = None,
) -> list[job_pb2.JobEvent]:
    """Events until now (WatchJob would follow a live job until it ends); given `until`, read
    until those events have arrived (a loaded broker may send them seconds late)."""
    if until is not None:
        return events_until(stub, job_id, md(token), until)
    out: list[job_pb2.JobEvent] = []
    try:
        for resp in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=md(token), timeout=1.0):
            out.append(resp.event)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return out


def test_offers_show_price_currency_and_the_compliance_reason(broker: BrokerProcess) -> None:
    """`szb offers`: what can run where, at what price, allowed or not and why (SkyPilot's show-gpus)."""
    out = szb(broker, CN, "offers", "-o", "json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["tenant"] == "cn-lab" and body["policy_currency"] == "CNY"
    by_model = {o["accelerator"]: o for o in body["offers"]}
    h100, a10g, a800 = by_model["H100"], by_model["A10G"], by_model["A800"]
    assert not h100["allowed"] and h100["reasons"][0]["rule"] == "us-export-3a090"
    assert h100["currency"] == "USD" and h100["price_per_hour_policy"] == pytest.approx(98.32 * 7.2)
    assert a10g["allowed"] and a800["allowed"] and a800["free"] == 1 and a800["currency"] == "CNY"
    # Another tenant's view (SG is not D:5): the H100 is allowed there.
    sg = json.loads(szb(broker, RICH, "offers", "--accelerator", "h100", "-o", "json").stdout)
    assert [o["accelerator"] for o in sg["offers"]] == ["H100"] and sg["offers"][0]["allowed"]
    allowed = json.loads(szb(broker, CN, "offers", "--allowed", "-o", "json").stdout)
    assert allowed["offers"] and all(o["allowed"] for o in allowed["offers"])
    assert "H100" not in {o["accelerator"] for o in allowed["offers"]}
    # A tenant may not look at another tenant's view.
    other = szb(broker, CN, "offers", "--tenant", "rich-lab")
    assert other.returncode == 1 and "NOT_FOUND" in other.stderr
    table = szb(broker, CN, "offers", "--accelerator", "H100")
    assert "[us-export-3a090]" in table.stdout and "98.32 USD" in table.stdout
    assert "0 of 1 allowed" in table.stdout
    # A misspelt model is said to be one (an empty table read as "nothing of that kind anywhere").
    typo = szb(broker, CN, "offers", "--accelerator", "H1OO", "--accelerator", "cpu")
    assert typo.returncode == 1 and "INVALID_ARGUMENT" in typo.stderr, typo.stderr
    assert "accelerators[0]: unknown accelerator 'H1OO' (did you mean 'H100'?)" in typo.stderr
