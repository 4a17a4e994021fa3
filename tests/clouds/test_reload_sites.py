"""A hot reload that changes the cloud sites reaches the running broker's launches.

README: `szb serve` watches the policy and the sites' catalog CSVs, and a valid edit swaps in.
A cloud site's offers come from its adapter, so a reload that adds a cloud site or edits its
catalog must reach the adapters too: the new site launches (not "no adapter configured"
attempt after attempt) and an edited price is what `szb explain` and the decision use.
Through a real `szb serve` on moto.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from broker.api import job_pb2
from tests.brokerproc import BrokerProcess, stub_for, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, job_yaml, submit_file, wait_state
from tests.clouds.test_breaker_trial import events_so_far
from tests.doubles.moto_front import MotoFront
from tests.job_events import reached

EAST = on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
HEAD = on_moto.POLICY_HEAD + on_moto.ONPREM_A800 + EAST
TAIL = on_moto.sg_lab_tail()


def offers_of(broker: BrokerProcess, job: Path) -> dict[tuple[str, str], float]:
    out = szb(broker, TOKEN, "explain", str(job), "-o", "json")
    assert out.returncode == 0, out.stderr
    return {(o["site"], o["instance_type"]): o["price_per_hour"] for o in json.loads(out.stdout)["offers"]}


def test_a_reload_that_adds_a_cloud_site_and_edits_a_catalog_reaches_the_adapters(
    moto: MotoFront, start_broker: StartBroker, tmp_path: Path
) -> None:
    aws = on_moto.aws_on_moto(moto.url, heartbeat_s=1)
    broker = start_broker(
        on_moto.BrokerSetup(
            HEAD + TAIL,
            tokens={"sg-lab": TOKEN},
            # broker.yaml knows how to reach aws-west before the policy names it
            sites={"aws-east": aws, "aws-west": aws},
            catalogs={"aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a")},
        )
    )
    job = job_yaml(tmp_path, "a10g", max_wait="0s", estimate="2h", accelerators="A10G")
    assert offers_of(broker, job)[("aws-east", "g5.xlarge")] == 1.006

    folder = broker.config.parent
    (folder / "aws-east.csv").write_text(on_moto.catalog("g5.xlarge,A10G,1,4,16,0.80,,us-east-1,us-east-1a"))
    (folder / "aws-west.csv").write_text(on_moto.catalog("g5.xlarge,A10G,1,4,16,0.50,,us-west-2,us-west-2a"))
    (folder / "policy.yaml").write_text(
        HEAD + on_moto.cloud_site("aws-west", "aws", "us-west-2", "aws-west.csv") + TAIL
    )
    # Both prices, as soon as the reload has reached both adapters. (A refresh of the cloud offers
    # begun before the swap once put aws-east's old price back in CI; OfferSource now sets such a
    # read aside. A price that never changes still fails.)
    deadline = time.monotonic() + 90
    want = {("aws-east", "g5.xlarge"): 0.80, ("aws-west", "g5.xlarge"): 0.50}
    while {k: (offers := offers_of(broker, job)).get(k) for k in want} != want:
        assert time.monotonic() < deadline, f"the reload never reached the adapters: {offers}"
        time.sleep(0.5)

    job_id = submit_file(broker, TOKEN, job)
    with stub_for(broker.address) as stub:
        running = wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING})
        history = [e.message for e in events_so_far(stub, job_id, until=reached(job_pb2.JOB_STATE_RUNNING))]
    assert running.site == "aws-west" and running.attempts == 1, history
    launches = [region for action, region, _ in moto.scenario.calls if action == "RunInstances"]
    assert launches == ["us-west-2"]
