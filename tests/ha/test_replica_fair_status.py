"""Fair share as an operator sees it through an API replica: `szb status` and /metrics.

Review: the replica's fair-share book was fed only when an explain refreshed its snapshot, so
its status and /metrics (which Prometheus scrapes) showed every tenant idle while the scheduler
ran their jobs: no `szb_fair_share_ratio`, `szb_quota_units` of nobody's work. The scheduler now
publishes each tenant's standing with its site report, and a replica shows that.
"""

from __future__ import annotations

import json
import time

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.auth import Role, token_entry_line
from broker.fairshare.standing import QuotaUse, TenantStanding
from broker.sitereport import SiteReport
from tests.clouds.test_metrics_e2e import metrics_url, scrape, value
from tests.e2e.conftest import auth
from tests.ha.conftest import Cluster
from tests.ha.test_replica_explain_fair import gpus

OPERATOR = "token-operator-replica-0123456789"


def test_a_replica_shows_the_fair_share_standing_the_scheduler_keeps(cluster: Cluster) -> None:
    folder = cluster.config.parent
    policy = folder / "policy.yaml"
    policy.write_text(policy.read_text().replace(
        "{id: team-b, kind: institute, entity_country: CN}",
        "{id: team-b, kind: institute, entity_country: CN, share: {quota: {local/a800: 2}}}"))
    with (folder / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    api = cluster.start("api", env={"SZB_METRICS_LISTEN": "127.0.0.1:0"})
    cluster.start("scheduler")
    cluster.leader()
    ops = (("authorization", f"Bearer {OPERATOR}"),)
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        ask = pb.SubmitJobRequest(job=gpus("all-four", 4, 600))
        holder = stub.SubmitJob(ask, metadata=auth("team-a")).job
        try:
            # No explain is asked: status and scrapes alone must see team-a's four units.
            deadline = time.monotonic() + 90
            while True:
                rows = {r.tenant: r for r in stub.GetStatus(pb.GetStatusRequest(), metadata=ops).fair_share}
                held = {q.partition: q.in_use for q in rows["team-a"].quotas} if "team-a" in rows else {}
                if held.get("local/a800") == 4:
                    break
                assert time.monotonic() < deadline, f"the replica never showed team-a's units: {rows}"
                time.sleep(0.3)
            samples = scrape(metrics_url(api), OPERATOR)
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=holder.id), metadata=auth("team-a"))
    a, b = rows["team-a"], rows["team-b"]
    assert a.HasField("share_ratio") and a.share_ratio > 0 and a.usage_share > 0, a
    assert [(q.partition, q.guaranteed, q.in_use, q.borrowed) for q in a.quotas] == [("local/a800", 0, 4, 4)]
    assert [(q.partition, q.guaranteed, q.in_use, q.borrowed) for q in b.quotas] == [("local/a800", 2, 0, 0)]
    # Prometheus scrapes replicas for fair share (a scheduler's /metrics has no such families).
    ratio = value(samples, "szb_fair_share_ratio", tenant="team-a")
    assert ratio == pytest.approx(a.share_ratio, rel=0.05), (ratio, a)
    units = {(t, kind): value(samples, "szb_quota_units", tenant=t, partition="local/a800", kind=kind)
             for t in ("team-a", "team-b") for kind in ("guaranteed", "in_use", "borrowed")}
    assert units == {("team-a", "guaranteed"): 0, ("team-a", "in_use"): 4, ("team-a", "borrowed"): 4,
                     ("team-b", "guaranteed"): 2, ("team-b", "in_use"): 0, ("team-b", "borrowed"): 0}


def test_the_site_report_carries_standings_and_an_older_schedulers_has_none() -> None:
    """None (not an empty table) from a scheduler that predates them: the replica shows its own."""
    quotas = (QuotaUse("local/a800", 2, 3),)
    sent = SiteReport({}, {}, frozenset(), (), fair_share=(
        TenantStanding("team-a", 2.0, 0.75, 1.5, quotas), TenantStanding("team-b", 1.0, 0.0, None, ())))
    assert SiteReport.from_json(sent.to_json()) == sent
    older = json.loads(sent.to_json())
    del older["fair_share"]
    assert SiteReport.from_json(json.dumps(older)).fair_share is None
