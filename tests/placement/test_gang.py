"""Gang jobs in placement (issue 14): all nodes on one site, priced and counted as a whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.burst import demand, estimate_cost
from broker.model import AcceleratorRequest, JobSpec, Offer, Resources, SpotMode, TenantId
from broker.placement import PlacementContext, place
from broker.policy import Policy, load_policy_text
from tests.placement.conftest import CONFIGS

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def spec(nodes: int, *, spot: SpotMode = SpotMode.ALLOWED) -> JobSpec:
    return JobSpec(
        name="train",
        command=("torchrun", "train.py"),
        runtime_estimate=timedelta(hours=2),
        resources=Resources(
            accelerators=AcceleratorRequest(count=8, any_of=("A800",)), cpus=32, memory_gb=256, nodes=nodes
        ),
        spot=spot,
    )


def test_gang_runs_only_where_one_site_has_all_its_nodes(policy: Policy, offers: list[Offer]) -> None:
    expl = place(spec(2), TenantId("pku-nlp"), offers, policy, PlacementContext(now=NOW))
    allowed = {s.offer.site for s in expl.allowed}
    assert allowed == {"shangzhuang-onprem"}  # a800 has 16 nodes; no cloud sells A800
    anywhere = spec(2).model_copy(
        update={
            "resources": Resources(accelerators=AcceleratorRequest(count=1), cpus=4, memory_gb=16, nodes=2)
        }
    )
    any_gpu = place(anywhere, TenantId("pku-nlp"), offers, policy, PlacementContext(now=NOW))
    sites = {s.offer.site for s in any_gpu.allowed}
    # AWS and Alibaba launch a gang's instances in one placement group / deployment set.
    assert {"shangzhuang-onprem", "aws-us-east-1", "aliyun-cn-beijing"} <= sites
    assert not any(s.offer.spot for s in any_gpu.allowed)  # gangs stay off spot
    # A cloud adapter that cannot launch gangs is refused with the reason.
    text = (CONFIGS / "policy.yaml").read_text().replace("adapter: aws", "adapter: libcloud")
    no_gangs = load_policy_text(text, str(CONFIGS / "policy.yaml"))
    refused = place(anywhere, TenantId("pku-nlp"), offers, no_gangs, PlacementContext(now=NOW))
    assert not any(s.offer.site.startswith("aws") for s in refused.allowed)
    aws = [s for s in refused.offers if s.offer.site.startswith("aws")]
    assert any(
        r.rule == "job.nodes" and "libcloud adapter cannot launch gangs" in r.message
        for s in aws
        for r in s.reasons
    )
    too_big = place(spec(17), TenantId("pku-nlp"), offers, policy, PlacementContext(now=NOW))
    assert not too_big.allowed
    reasons = {r.message for s in too_big.offers for r in s.reasons if r.rule == "job.nodes"}
    assert "partition a800 has 16 node(s), the gang needs 17" in reasons


def test_a_gang_is_refused_on_a_local_executor_site(policy: Policy, offers: list[Offer]) -> None:
    """Found by a fair-share review: a local site whose partition declares 3 nodes took a
    2-node gang, priced it as two nodes and ran it as one process on its one host."""
    text = (CONFIGS / "policy.yaml").read_text().replace("adapter: slurm", "adapter: local")
    local = load_policy_text(text, str(CONFIGS / "policy.yaml"))
    refused = place(spec(2), TenantId("pku-nlp"), offers, local, PlacementContext(now=NOW))
    assert not any(s.offer.site == "shangzhuang-onprem" for s in refused.allowed)
    home = [s for s in refused.offers if s.offer.site == "shangzhuang-onprem" and s.offer.count == 8
            and s.offer.accelerator == "A800"]  # (the rest do not fit one node of the job)
    assert home and all(
        any(r.rule == "job.nodes" and "local adapter runs jobs on one host" in r.message for r in s.reasons)
        for s in home
    )
    one = place(spec(1), TenantId("pku-nlp"), offers, local, PlacementContext(now=NOW))
    assert any(s.offer.site == "shangzhuang-onprem" for s in one.allowed)  # one node: as before


def test_gang_counts_the_whole_gang_in_price_and_capacity(policy: Policy, offers: list[Offer]) -> None:
    one = place(spec(1), TenantId("pku-nlp"), offers, policy, PlacementContext(now=NOW))
    four = place(spec(4), TenantId("pku-nlp"), offers, policy, PlacementContext(now=NOW))
    pick = next(s for s in four.allowed if s.offer.instance_type == "a800" and s.offer.count == 8)
    same = next(s for s in one.allowed if s.offer.key == pick.offer.key and s.offer.count == 8)
    assert pick.terms["cost"] == 4 * same.terms["cost"]
    assert estimate_cost(spec(4), pick.offer, policy) == 4 * estimate_cost(spec(1), pick.offer, policy)
    assert demand(spec(4)) == 32


def test_gangs_stay_off_spot_unless_the_policy_allows(policy: Policy) -> None:
    onprem_spot = Offer(
        site="shangzhuang-onprem",
        instance_type="a800",
        accelerator="A800",
        count=8,
        price_per_hour=1,
        spot=True,
    )
    expl = place(spec(2), TenantId("pku-nlp"), [onprem_spot], policy, PlacementContext(now=NOW))
    assert not expl.allowed
    assert any("gangs do not run on spot" in r.message for s in expl.offers for r in s.reasons)
    relaxed = policy.model_copy(
        update={
            "document": policy.document.model_copy(
                update={"gangs": policy.document.gangs.model_copy(update={"spot": True})}
            )
        }
    )
    assert place(spec(2), TenantId("pku-nlp"), [onprem_spot], relaxed, PlacementContext(now=NOW)).allowed


def test_a_cloud_gang_costs_n_instances(policy: Policy, offers: list[Offer]) -> None:
    one = spec(1).model_copy(
        update={"resources": Resources(accelerators=AcceleratorRequest(count=1), cpus=4, memory_gb=16)}
    )
    three = one.model_copy(update={"resources": one.resources.model_copy(update={"nodes": 3})})
    single = place(one, TenantId("pku-nlp"), offers, policy, PlacementContext(now=NOW))
    gang = place(three, TenantId("pku-nlp"), offers, policy, PlacementContext(now=NOW))
    cloud = next(s for s in gang.allowed if s.offer.site == "aws-us-east-1")
    same = next(
        s for s in single.allowed if s.offer.key == cloud.offer.key and s.offer.count == cloud.offer.count
    )
    assert cloud.terms["cost"] == 3 * same.terms["cost"]
    assert estimate_cost(three, cloud.offer, policy) == 3 * estimate_cost(one, cloud.offer, policy)
