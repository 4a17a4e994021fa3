"""A rule on `hardware.pd` treats a part of unknown die area as dense, as the classifier does.

Found by a review: `hardware.pd` was -1.0 when the die area is unknown, so `deny: hardware.pd
>= 3.2` let the on-prem Ascend910B (no published die area) through, the opposite of the export
classifier, which assumes such a part meets every density prong.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import running_broker
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import spec

ASCEND = "      - {name: ascend, accelerator: Ascend910B, count_per_node: 8, price_hour: 9.0}\n"
RULES = """\
  rules:
    - id: dense-parts
      deny: 'hardware.pd >= 6.5'
      reason: "{accelerator} is too dense"
"""


def test_a_pd_rule_denies_a_part_of_unknown_die_area(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    policy = POLICY.replace("      - {name: cpu,", ASCEND + "      - {name: cpu,", 1)
    (tmp_path / "policy.yaml").write_text(policy + RULES)
    job = spec("either", [PY, "-c", "pass"], gpus=1)
    job.resources.accelerators.any_of.append("Ascend910B")
    with running_broker(config) as broker, grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        got = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=job), metadata=auth("team-a")).explanation
    ascend = [o for o in got.offers if o.accelerator == "Ascend910B"]
    assert ascend and not any(o.allowed for o in ascend), got.offers
    assert all("dense-parts" in {r.rule for r in o.reasons} for o in ascend), got.offers
    assert any(o.allowed for o in got.offers if o.accelerator == "A800")  # PD 6.04: below 6.5
    assert got.chosen.accelerator == "A800"
