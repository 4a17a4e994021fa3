"""The pure decision with projected waits (issue 15, obs. 2 and 3): bursts lined up on a route
move a late job's last responsible moment earlier, and a cheaper partition projected to start
the job in time wins over a dearer one free now when it saves more than the wait costs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker.burst import BurstInputs, decide
from broker.decision import Action
from broker.fairshare import held_back
from broker.model import SiteId, TenantId
from broker.policy import Policy, load_policy
from broker.policy.offers import static_offers
from tests.burst.conftest import POLICY, write_policy
from tests.burst.test_decision import NOW, job

CHEAP, DEAR = "onprem/a800", "onprem/a800b"


@pytest.fixture(scope="module")
def two_partitions(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    text = POLICY.replace(
        "      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14.0}\n",
        "      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14.0}\n"
        "      - {name: a800b, accelerator: A800, count_per_node: 8, price_hour: 20.0}\n",
    )
    return load_policy(write_policy(tmp_path_factory.mktemp("two-partitions"), text))


def projected(waited_min: float, waits: dict[str, float], free: dict[str, int], **kw: object) -> BurstInputs:
    return BurstInputs(
        now=NOW,
        queued_since=NOW - timedelta(minutes=waited_min),
        onprem_capacity={k: (n, 0.0) for k, n in free.items()},
        projected_wait=waits,
        **kw,  # type: ignore[arg-type]
    )


def test_bursts_lined_up_on_the_route_move_the_last_responsible_moment_earlier(policy: Policy) -> None:
    spec = job(("A800", "A10"), max_wait="30m")
    offers = static_offers(policy, read_at=NOW)
    # Projected to start in 2 h; 10 min of its 30 left; ali-bj brings an instance up within
    # 5 min (p95) and launches at most 2 at a time.
    late = projected(20, {"onprem/a800": 7200.0}, {"onprem/a800": 0})
    alone = decide(spec, TenantId("lab"), offers, policy, late)
    assert alone.action == Action.WAIT and alone.facts.burst_in_s == 300
    queue = {SiteId("ali-bj"): 2}  # a full round of bursts due before this job is lined up there
    crowded = decide(
        spec,
        TenantId("lab"),
        offers,
        policy,
        projected(20, {"onprem/a800": 7200.0}, {"onprem/a800": 0}, launches_ahead=queue),
    )
    assert crowded.action == Action.RUN and crowded.burst and crowded.offer is not None
    assert crowded.offer.site == "ali-bj"


@pytest.mark.parametrize(
    ("runtime", "cheap_wait_s", "where", "action"),
    [
        ("10h", 120.0, CHEAP, Action.WAIT),  # saves 60 CNY for 2 min of waiting (1.3 CNY)
        ("2m", 120.0, DEAR, Action.RUN),  # saves 0.2 CNY: not worth 2 min
        ("10h", 1600.0, DEAR, Action.RUN),  # in time, but no provisioning p95 left for a burst
    ],
)
def test_a_cheaper_partition_that_starts_the_job_in_time_wins(
    two_partitions: Policy, runtime: str, cheap_wait_s: float, where: str, action: Action
) -> None:
    spec = job(("A800",), runtime=runtime, max_wait="30m")
    offers = static_offers(two_partitions, read_at=NOW)
    inputs = projected(0, {CHEAP: cheap_wait_s, DEAR: 0.0}, {CHEAP: 0, DEAR: 8})
    d = decide(spec, TenantId("lab"), offers, two_partitions, inputs)
    assert d.action == action and d.offer is not None and d.offer.partition == where and not d.burst


def test_without_projections_the_free_partition_runs_the_job(two_partitions: Policy) -> None:
    spec = job(("A800",), runtime="10h", max_wait="30m")
    offers = static_offers(two_partitions, read_at=NOW)
    inputs = BurstInputs(now=NOW, queued_since=NOW, onprem_capacity={CHEAP: (0, 120.0), DEAR: (8, 0.0)})
    d = decide(spec, TenantId("lab"), offers, two_partitions, inputs)
    assert d.action == Action.RUN and d.offer is not None and d.offer.partition == DEAR


LEAD_S = 300  # aws-east's provisioning p95: the 5-min default


def test_a_firm_deadline_bursts_at_the_last_moment_where_lateness_looks_cheaper(policy: Policy) -> None:
    # A long job projected to start 10 min late: the lateness (4 x 40 CNY/h for 10 min) costs far
    # less than the cloud's premium, so it waits on-prem past its max_wait. With a firm deadline
    # (its tenant is held back by one far over its fair share) it bursts at its last
    # responsible moment instead: waiting until then, bursting then, whatever the premium.
    spec = job(("A800", "A100"), runtime="10h", max_wait="30m", count=8)
    offers = static_offers(policy, read_at=NOW)
    wait = {"onprem/a800": 30 * 60 + 600.0}
    loose = decide(spec, TenantId("lab"), offers, policy, projected(0, wait, {"onprem/a800": 0}))
    assert loose.action == Action.WAIT and loose.facts.burst_in_s is None
    assert loose.facts.cloud_total_cost is not None and loose.facts.onprem_total_cost is not None
    assert loose.facts.cloud_total_cost > loose.facts.onprem_total_cost
    early = decide(
        spec, TenantId("lab"), offers, policy, projected(0, wait, {"onprem/a800": 0}, firm_deadline=True)
    )
    assert early.action == Action.WAIT and early.facts.burst_in_s == 30 * 60 - LEAD_S
    wait_late = {"onprem/a800": 600.0 + LEAD_S}  # at its last responsible moment, still 10 min late
    at_last = projected(30 - LEAD_S / 60, wait_late, {"onprem/a800": 0}, firm_deadline=True)
    due = decide(spec, TenantId("lab"), offers, policy, at_last)
    assert due.action == Action.RUN and due.burst and due.offer is not None and due.offer.site == "aws-east"
    in_time = {"onprem/a800": 120.0}  # capacity frees in time: the firm deadline changes nothing
    soon = projected(10, in_time, {"onprem/a800": 0}, firm_deadline=True)
    ok = decide(spec, TenantId("lab"), offers, policy, soon)
    assert ok.action == Action.WAIT and not ok.burst and ok.facts.burst_in_s is None


def test_held_back_names_a_tenant_far_below_another_active_tenant() -> None:
    ratios = {"flood": 1.6, "small": 0.3, "mid": 0.9}
    assert held_back(ratios, "small", 2.0)  # 1.6 >= 2 x 0.3
    assert not held_back(ratios, "mid", 2.0)  # 1.6 < 2 x 0.9
    assert not held_back(ratios, "flood", 2.0)
    assert held_back({"flood": 0.5, "idle": 0.0}, "idle", 2.0)  # uses nothing while another does
    assert not held_back({"a": 0.0, "b": 0.0}, "a", 2.0)  # nobody uses anything: nobody owed
    assert not held_back(ratios, "small", 0.0)  # 0 turns the rule off


def test_a_partition_that_can_never_start_the_job_is_a_late_wait_not_a_crash(policy: Policy) -> None:
    # A projection of "never" (inf: the partition is too small, or the line gives up) used to
    # reach round() and raise OverflowError; it is a very late wait, so the job is set to burst
    # at its last responsible moment.
    spec = job(("A800", "A10"), max_wait="30m")
    offers = static_offers(policy, read_at=NOW)
    never = projected(0, {"onprem/a800": float("inf")}, {"onprem/a800": 0})
    decision = decide(spec, TenantId("lab"), offers, policy, never)
    waited = decision.facts.onprem_expected_wait_s
    assert waited is not None and waited >= 10**9
    assert decision.action == Action.WAIT and decision.facts.burst_in_s is not None


def test_the_partition_free_now_is_not_charged_a_projected_wait_it_will_not_have(
    two_partitions: Policy,
) -> None:
    # The dearer partition has room now, though its projection (jobs ahead in its line) says
    # 10 min: the job starts there now, so waiting 2 min for the cheaper one (to save 0.2 CNY on
    # a 2-min job) is compared with starting now, not with 10 min of waiting that will not happen.
    spec = job(("A800",), runtime="2m", max_wait="30m")
    offers = static_offers(two_partitions, read_at=NOW)
    inputs = projected(0, {CHEAP: 120.0, DEAR: 600.0}, {CHEAP: 0, DEAR: 8})
    d = decide(spec, TenantId("lab"), offers, two_partitions, inputs)
    assert d.action == Action.RUN and d.offer is not None and d.offer.partition == DEAR
