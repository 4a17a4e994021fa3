"""A cloud site's catalog CSV as the running broker offers and launches it (AWS on moto).

The catalog is per zone: each zone row has its own prices (spot prices differ zone by zone,
as in the bundled `configs/catalog/aws_gpu_vms.csv`), and a site whose catalog says
`spot: false` must never be offered, nor launched, on the spot market even when its CSV has a
spot price column filled in.
"""

from __future__ import annotations

import json
from pathlib import Path

from broker.api import job_pb2
from tests.brokerproc import BrokerProcess, stub_for, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, job_yaml, submit_file, wait_state
from tests.doubles.moto_front import MotoFront

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv", spot=True)
    + on_moto.cloud_site("aws-west", "aws", "us-west-2", "aws-west.csv", spot=False)
    + on_moto.sg_lab_tail()
)


def start(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    aws = on_moto.aws_on_moto(moto.url, heartbeat_s=1)
    return start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"sg-lab": TOKEN},
            sites={"aws-east": aws, "aws-west": aws},
            catalogs={
                # Spot is dearer in 1a than in 1b: the rows must not collapse into 1a's prices.
                "aws-east.csv": on_moto.catalog(
                    "g5.xlarge,A10G,1,4,16,1.006,0.47,us-east-1,us-east-1a",
                    "g5.xlarge,A10G,1,4,16,1.006,0.31,us-east-1,us-east-1b",
                ),
                # The cheapest spot price of all, on a site whose catalog turns spot off.
                "aws-west.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.10,0.05,us-west-2,us-west-2a"),
            },
        )
    )


def test_zone_prices_and_the_sites_spot_switch_reach_the_live_offers(
    moto: MotoFront, start_broker: StartBroker, tmp_path: Path
) -> None:
    broker = start(moto, start_broker)
    job = job_yaml(tmp_path, "a10g", max_wait="0s", estimate="2h", accelerators="A10G")
    out = szb(broker, TOKEN, "explain", str(job), "-o", "json")
    assert out.returncode == 0, out.stderr
    offers = json.loads(out.stdout)["offers"]
    prices = {(o["site"], o["zone"], o["spot"]): o["price_per_hour"] for o in offers if o["site"] != "onprem"}
    assert prices == {
        ("aws-east", "us-east-1a", False): 1.006,
        ("aws-east", "us-east-1b", False): 1.006,
        ("aws-east", "us-east-1a", True): 0.47,
        ("aws-east", "us-east-1b", True): 0.31,
        ("aws-west", "us-west-2a", False): 1.10,
    }

    job_id = submit_file(broker, TOKEN, job)
    with stub_for(broker.address) as stub:
        wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN)
    launches = [(r, p) for a, r, p in moto.scenario.calls if a == "RunInstances"]
    assert len(launches) == 1
    region, params = launches[0]
    assert (region, params.get("Placement.AvailabilityZone")) == ("us-east-1", "us-east-1b")
    assert params.get("InstanceMarketOptions.MarketType") == "spot"
