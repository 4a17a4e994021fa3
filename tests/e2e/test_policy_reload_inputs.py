"""Hot reload of what the policy file refers to: its accelerator catalog (and the regimes
and price catalogs, read the same way) is watched and swapped in like the policy itself.

An operator who flagged an accelerator in accelerators.yaml saw nothing change: only the
policy file's mtime was watched, and a SIGHUP reload compared the policy file's hash alone,
so the old catalog stayed in force until a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import spec, submit

RULE = """\
  rules:
    - id: retired-hardware
      deny: '"retired" in hardware.flags'
      reason: "{accelerator} is retired"
"""


def explain(stub: broker_service_pb2_grpc.BrokerServiceStub) -> pb.ExplainPlacementResponse:
    job = spec("probe", [PY, "-c", "pass"], gpus=1)
    return stub.ExplainPlacement(pb.ExplainPlacementRequest(job=job), metadata=auth("team-a"))


def test_an_edited_accelerator_catalog_is_reloaded(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY + RULE)
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            before = explain(stub).explanation
            assert before.allowed_offers > 0
            assert submit(stub, spec("before", [PY, "-c", "pass"], gpus=1)).job.id

            catalog = tmp_path / "accelerators.yaml"
            text = catalog.read_text()
            marker = "    provenance: quoted-datasheet\n  - name: H100\n"
            assert marker in text
            catalog.write_text(text.replace(marker, "    flags: [retired]\n" + marker, 1))

            deadline = time.monotonic() + 20
            while "retired-hardware" not in {r.rule for r in explain(stub).explanation.rejections}:
                assert time.monotonic() < deadline, "the edited accelerator catalog never came into force"
                time.sleep(0.2)
            after = explain(stub).explanation
            assert after.allowed_offers == 0
            try:
                submit(stub, spec("after", [PY, "-c", "pass"], gpus=1))
                raise AssertionError("a job for retired hardware was admitted")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "retired-hardware" in (err.details() or ""), err.details()
    finally:
        broker.stop()
