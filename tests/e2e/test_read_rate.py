"""A tenant's reads are rate-limited, against a real `szb serve`: a flood of explains (each places
the job on every site) answered RESOURCE_EXHAUSTED naming `read_rate`, while other tenants and the
operator are served as before. Reads had no limit: one tenant could take the CPU all others share.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.auth import hash_token
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import TOKENS, auth, write_broker_config
from tests.e2e.test_quotas import OPS_TOKEN, job, quota_failure
from tests.local_policy import cpu, local_policy

POLICY = local_policy(
    "  - {id: team-a, kind: university, entity_country: CN}\n"
    "  - {id: team-b, kind: institute, entity_country: CN, limits: {read_burst: 1000}}\n"
    "  - {id: ops, kind: internal, entity_country: CN}\n",
    cpu(64),
    rest="limits: {read_rate: 2, read_burst: 30}\n",
    objective=True,
)

Stub = broker_service_pb2_grpc.BrokerServiceStub


@pytest.fixture
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stub]:
    config = write_broker_config(tmp_path_factory.mktemp("reads"))
    (config.parent / "policy.yaml").write_text(POLICY)
    (config.parent / "tokens.yaml").write_text(
        "tokens:\n"
        + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
        + f"  - {{tenant: ops, sha256: {hash_token(OPS_TOKEN)}, role: operator}}\n"
    )
    proc = BrokerProcess(config)
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            yield broker_service_pb2_grpc.BrokerServiceStub(channel)
    finally:
        proc.stop()


def explain(stub: Stub, metadata: tuple[tuple[str, str], ...]) -> pb.ExplainPlacementResponse:
    return stub.ExplainPlacement(pb.ExplainPlacementRequest(job=job("look")), metadata=metadata)


def test_a_flood_of_explains_is_refused_past_the_read_burst_and_no_one_else_is(stub: Stub) -> None:
    for _ in range(3):  # 10 tokens each: the burst of 30
        assert explain(stub, auth("team-a")).explanation.offers
    with pytest.raises(grpc.RpcError) as err:
        explain(stub, auth("team-a"))
    violation = quota_failure(err.value)
    assert violation.quota_id == "read_rate" and violation.subject == "tenant:team-a"
    said = err.value.details() or ""
    assert "ExplainPlacement takes 10 read token(s) (burst 30, 2/s): retry in" in said, said
    # Streams too: each opening of a log stream or a watch takes its tokens.
    a = auth("team-a")
    for opening in (lambda: list(stub.StreamJobLogs(pb.StreamJobLogsRequest(id="j-0"), metadata=a)),
                    lambda: list(stub.WatchJob(pb.WatchJobRequest(id="j-0"), metadata=a))):
        with pytest.raises(grpc.RpcError) as refused:
            opening()
        assert quota_failure(refused.value).quota_id == "read_rate"
    # Another tenant, and the operator, are served as before.
    for _ in range(5):
        assert explain(stub, auth("team-b")).explanation.offers
    operator = (("authorization", f"Bearer {OPS_TOKEN}"),)
    for _ in range(10):
        assert explain(stub, operator).explanation.offers
        stub.GetStatus(pb.GetStatusRequest(), metadata=operator)
    # The bucket refills at read_rate: a cheap read gets through again within a second or so.
    deadline = time.monotonic() + 10
    while True:
        try:
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth("team-a"))
            break
        except grpc.RpcError as exc:
            assert quota_failure(exc).quota_id == "read_rate"
            assert time.monotonic() < deadline, "the read bucket never refilled"
            time.sleep(0.2)
