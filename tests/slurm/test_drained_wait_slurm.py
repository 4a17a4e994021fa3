"""A fully drained, idle partition has no expected wait to offer (szb serve over gRPC, real Slurm).

`szb status` and `szb explain` said ∞ for a partition whose only node was drained, while
ListOffers (`szb offers`) said FREE 0 WAIT 0m: the adapter's headline wait was 0 for a partition
with no usable units, and the offer took it. Every view now says never (∞).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.api import broker_service_pb2 as pb
from broker.burst.projection import NEVER_S
from tests.brokerproc import BrokerProcess, stub_for, szb
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, TOKENS, auth, write_onprem_config

pytestmark = pytest.mark.slurm


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    slurm_cluster.wait_usable()
    broker_id = f"szb-dw-{uuid.uuid4().hex[:8]}"
    config = write_onprem_config(tmp_path / "b", slurm_cluster.env, broker_id=broker_id)
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def scontrol(cluster: SlurmCluster, *args: str) -> None:
    out = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30, check=False,
                         env={**os.environ, **cluster.env})
    assert out.returncode == 0, out.stderr


def test_a_drained_idle_partition_waits_forever_in_every_view(
    broker: BrokerProcess, slurm_cluster: SlurmCluster
) -> None:
    scontrol(slurm_cluster, "update", "nodename=szb-a800", "state=drain", "reason=szb-test")
    try:
        with stub_for(broker.address) as stub:
            deadline = time.monotonic() + 30
            while True:
                status = stub.GetStatus(pb.GetStatusRequest(), metadata=auth())
                part = next(p for p in status.partitions if p.partition == "a800")
                if part.total == 0:
                    break
                assert time.monotonic() < deadline, part
                time.sleep(0.3)
            assert part.expected_wait_seconds >= NEVER_S, part
            offers = stub.ListOffers(pb.ListOffersRequest(accelerators=["A800"]), metadata=auth()).offers
            a800 = [o for o in offers if o.site == SITE and o.instance_type == "a800"]
            assert a800 and all(o.expected_wait_seconds >= NEVER_S for o in a800), a800
            out = szb(broker, TOKENS["team-a"], "offers", "--accelerator", "A800", env={"COLUMNS": "250"})
        assert out.returncode == 0, out.stderr
        row = next(line for line in out.stdout.splitlines() if "a800" in line and SITE[:10] in line)
        assert "∞" in row and " 0m" not in row, out.stdout
    finally:
        scontrol(slurm_cluster, "update", "nodename=szb-a800", "state=resume")
