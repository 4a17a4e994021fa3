"""`szb status` shows where each tenant stands in fair share. Review: an operator could not see
whether a tenant was inside its guaranteed quota, how much it borrowed or how far over its
share it ran: `szb status` showed only the operator's own submit limits. Now an operator sees
every tenant's weight, use, use over its share and quota units in use (borrowed beyond); a
tenant sees its own row only. A real `szb serve`, the local executor, real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.brokerproc import JOB_PYTHON, BrokerProcess, szb, write_broker_folder
from tests.clouds.test_metrics_e2e import metrics_url, scrape, value
from tests.fairshare.test_reclaim_e2e import POLICY

TOKENS = {"owner": "token-owner-0123456789", "borrower": "token-borrower-012345"}
OPERATOR = "token-operator-fair-0123456789"


def sleeper(name: str) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=[JOB_PYTHON, "-c", "import time; time.sleep(120)"],
                          runtime_estimate=duration_pb2.Duration(seconds=600))
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append("A800")
    return msg


def test_status_shows_each_tenants_share_quota_and_borrowed_units(tmp_path: Path) -> None:
    config = write_broker_folder(tmp_path, POLICY, TOKENS)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    broker = BrokerProcess(config, extra_env={"SZB_METRICS_LISTEN": "127.0.0.1:0"})
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            ids = []
            for tenant, n in (("borrower", 3), ("owner", 1)):
                for i in range(n):
                    metadata = (("authorization", f"Bearer {TOKENS[tenant]}"),)
                    ids.append((tenant, stub.SubmitJob(pb.SubmitJobRequest(job=sleeper(f"{tenant}{i}")),
                                                       metadata=metadata).job.id))
            deadline = time.monotonic() + 60
            while True:
                out = szb(broker, OPERATOR, "status", "-o", "json")
                assert out.returncode == 0, out.stderr
                rows = {r["tenant"]: r for r in json.loads(out.stdout)["fair_share"]}
                in_use = {t: sum(q["in_use"] for q in r["quotas"]) for t, r in rows.items()}
                if in_use.get("borrower") == 3 and in_use.get("owner") == 1:
                    break
                assert time.monotonic() < deadline, rows
                time.sleep(0.3)
            table = szb(broker, OPERATOR, "status", env={"COLUMNS": "200"})
            samples = scrape(metrics_url(broker), OPERATOR)
            mine = szb(broker, TOKENS["owner"], "status", "-o", "json")
            for tenant, job_id in ids:
                metadata = (("authorization", f"Bearer {TOKENS[tenant]}"),)
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=metadata)
    finally:
        broker.stop()
    a800 = {"partition": "local/a800"}
    assert rows["owner"]["quotas"] == [{**a800, "guaranteed": 2, "in_use": 1, "borrowed": 0}]
    assert rows["borrower"]["quotas"] == [{**a800, "guaranteed": 0, "in_use": 3, "borrowed": 3}]
    assert rows["owner"]["weight"] == 1 and rows["borrower"]["weight"] == 1
    # Both are active; the borrower holds three units to the owner's one, on a 4-unit pool.
    assert rows["borrower"]["share_ratio"] > rows["owner"]["share_ratio"] > 0, rows
    assert rows["borrower"]["usage_share"] > rows["owner"]["usage_share"] > 0, rows
    assert "Fair share on-prem" in table.stdout, table.stdout
    assert "local/a800 3/0 (3 borrowed)" in table.stdout, table.stdout
    assert "local/a800 1/2" in table.stdout, table.stdout
    assert [r["tenant"] for r in json.loads(mine.stdout)["fair_share"]] == ["owner"]
    # The same on /metrics, for dashboards and alerts.
    assert value(samples, "szb_quota_units", tenant="borrower", partition="local/a800", kind="borrowed") == 3
    assert value(samples, "szb_quota_units", tenant="owner", partition="local/a800", kind="guaranteed") == 2
    assert value(samples, "szb_quota_units", tenant="owner", partition="local/a800", kind="in_use") == 1
    ratio = value(samples, "szb_fair_share_ratio", tenant="borrower")
    assert ratio == pytest.approx(rows["borrower"]["share_ratio"], rel=0.05), (ratio, rows)
