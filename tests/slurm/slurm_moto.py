"""A broker whose on-prem site is the real Slurm test cluster (one 4-A800 partition) and whose
cloud is AWS on moto: the setup the Slurm burst tests share."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.brokerproc import BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.doubles.moto_front import MotoFront
from tests.slurm.conftest import SlurmCluster

TOKEN = "token-lab-0123456789abcdef"
SITE = "onprem"


def policy(cluster: SlurmCluster, folder: Path, *, price_hour: float, tail: str, name: str) -> str:
    """The policy: `onprem` on Slurm at `price_hour` per A800-hour, `aws-east` on moto, tenant `lab`,
    then `tail` (burst and fair-share settings); `name` tells this broker's Slurm jobs apart."""
    adapter = {
        "url": cluster.env["SZB_SLURM_URL"],
        "user": cluster.env.get("SZB_SLURM_USER", "root"),
        "broker_id": f"szb-{name}-{uuid.uuid4().hex[:8]}",
        "output_dir": str(folder / "slurm-output"),
        "timeout_s": 3,
    }
    onprem = f"""\
  - id: {SITE}
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: a800, accelerator: A800, count_per_node: 4, price_hour: {price_hour}, cpus_per_node: 16}}
    adapter_config: {json.dumps(adapter)}
"""
    tenants = "tenants:\n  - {id: lab, kind: partner, entity_country: SG, monthly_budget: 5000}\n"
    return (
        on_moto.POLICY_HEAD
        + onprem
        + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
        + tenants
        + tail
        + on_moto.CN_RESIDENCY
    )


def start(
    start_broker: StartBroker, cluster: SlurmCluster, moto: MotoFront, policy_text: str
) -> BrokerProcess:
    """`szb serve` on that policy, dispatching often (tests wait on its passes)."""
    setup = on_moto.BrokerSetup(
        policy_text,
        tokens={"lab": TOKEN},
        sites={
            SITE: f"{{token: {json.dumps(cluster.token)}}}",
            "aws-east": on_moto.aws_on_moto(moto.url, heartbeat_s=1),
        },
        catalogs={"aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a")},
        dispatch="poll_interval_s: 0.2, reconcile_interval_s: 1.0, requeue_scan_s: 1.0",
    )
    return start_broker(setup)


def submit(broker: BrokerProcess, path: Path) -> str:
    """Submit a job file as `lab`; its id."""
    out = szb(broker, TOKEN, "submit", str(path), "-o", "json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)[0]["id"])
