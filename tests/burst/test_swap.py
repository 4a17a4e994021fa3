"""Stopping a patient on-prem job rather than bursting an urgent one (`burst.preempt_patient`,
issue 15): which running job `swap_for` picks, and when the burst stands. Pure decisions on a
real burst decision (`decide` with on-prem full for hours)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.burst import decide
from broker.burst.swap import Preemptible, swap_for
from broker.decision import Decision
from broker.model import TenantId
from broker.policy import Policy, load_policy
from tests.burst.conftest import POLICY, write_policy
from tests.burst.test_decision import inputs, job, offers

PART = "onprem/a800"


CHEAP_HOME = POLICY.replace("price_hour: 14.0", "price_hour: 1.6")
"""On-prem at its marginal cost (1.6 CNY per card-hour), below the cloud's 13.90 (4.00 spot)."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("swap-policy")


def enabled(folder: Path, text: str = CHEAP_HOME, **cfg: object) -> Policy:
    """The policy with `burst.preempt_patient` enabled (and `cfg` set), as an operator writes it;
    its Beijing catalog also sells 2 x A10."""
    fields = ", ".join(f"{k}: {v}" for k, v in {"enabled": "true", **cfg}.items())
    path = write_policy(folder, text.replace("burst:\n", f"burst:\n  preempt_patient: {{{fields}}}\n"))
    with (folder / "ali.csv").open("a") as csv:
        csv.write("ecs.gn7i-c16g1.4xlarge,A10,2,16,60,27.80,8.00,cn-beijing,cn-beijing-i\n")
    return load_policy(path)


@pytest.fixture(scope="module")
def cheap_home(folder: Path) -> Policy:
    return load_policy(write_policy(folder, CHEAP_HOME))


def a_burst(policy: Policy, runtime: str = "2h") -> Decision:
    d = decide(
        job(max_wait="5m", runtime=runtime),
        TenantId("lab"),
        offers(policy, free=0, wait_s=3 * 3600),
        policy,
        inputs(),
    )
    assert d.burst and d.offer is not None and d.offer.site != "onprem"
    return d


def patient(key: str = "p1", *, ran_min: float = 5, units: int = 1, **kw: object) -> Preemptible:
    base: dict[str, object] = {
        "key": key,
        "partition": PART,
        "units": units,
        "ran_s": ran_min * 60,
        "checkpoint_s": None,
        "max_wait_s": 4 * 3600.0,
        "restarts": 0,
    }
    base.update(kw)
    return Preemptible(**base)  # type: ignore[arg-type]


def test_off_by_default(cheap_home: Policy) -> None:
    assert (
        swap_for(a_burst(cheap_home), job(max_wait="5m", runtime="2h"), cheap_home, [patient()]) is None
    )


def test_the_patient_job_that_loses_least_is_stopped(folder: Path) -> None:
    on = enabled(folder)
    spec = job(max_wait="5m", runtime="2h")
    got = swap_for(a_burst(on), spec, on, [patient("old", ran_min=30), patient("new", ran_min=3)])
    assert got is not None and got.victim.key == "new" and got.offer.partition == PART
    assert 0 < got.lost < 0.25 * got.premium
    assert "bursting would cost" in got.reason(on.currency) and "onprem/a800" in got.reason(on.currency)


@pytest.mark.parametrize(
    "victim",
    [
        patient(max_wait_s=1800.0),  # not patient: it would be late itself
        patient(restarts=1),  # already restarted once
        patient(gang=True),
        patient(partition="onprem/other"),  # not where the job can run
        patient(ran_min=600),  # ten hours of work lost for a two-hour job's premium
        patient(tenant="other", in_quota=True),  # another tenant's guaranteed capacity
        patient(slack_s=-60.0),  # past its own start deadline: stopped, it would finish late
    ],
)
def test_the_burst_stands(folder: Path, victim: Preemptible) -> None:
    on = enabled(folder)
    assert swap_for(a_burst(on), job(max_wait="5m", runtime="2h"), on, [victim]) is None


def test_a_victim_smaller_than_the_job_is_not_stopped(folder: Path) -> None:
    """Units free beside a 1-unit victim used to count towards a 2-unit job; live, only the victim's
    units are booked to the job while it stops, so another job took the free one, the job could not
    start when the victim had stopped, and burst anyway: the patient work was lost for nothing."""
    on = enabled(folder)
    spec = job(max_wait="5m", runtime="2h", count=2)
    d = decide(spec, TenantId("lab"), offers(on, free=0, wait_s=3 * 3600), on, inputs())
    assert d.burst
    assert swap_for(d, spec, on, [patient()]) is None
    got = swap_for(d, spec, on, [patient("p1"), patient("p2", units=2)])
    assert got is not None and got.victim.key == "p2"


def test_a_checkpointed_victim_loses_only_the_work_since_its_checkpoint(folder: Path) -> None:
    on = enabled(folder, max_lost_share=0.01)
    spec = job(max_wait="5m", runtime="2h")
    long_run = patient(ran_min=300)
    assert swap_for(a_burst(on), spec, on, [long_run]) is None
    saved = patient(ran_min=300, checkpoint_s=1800.0)  # 300 min = 10 checkpoints, nothing since
    got = swap_for(a_burst(on), spec, on, [saved])
    assert got is not None and got.lost == 0


def test_no_swap_where_home_costs_more_than_the_cloud(folder: Path) -> None:
    on = enabled(folder, POLICY)  # on-prem at a 14 CNY/h shadow price: the burst is the cheaper run
    assert swap_for(a_burst(on), job(max_wait="5m", runtime="2h"), on, [patient()]) is None


def test_a_tenant_may_stop_its_own_work_within_its_quota(folder: Path) -> None:
    on = enabled(folder)
    spec = job(max_wait="5m", runtime="2h")
    mine = patient(tenant="lab", in_quota=True)
    got = swap_for(a_burst(on), spec, on, [mine], tenant="lab")
    assert got is not None and got.victim.key == "p1"


def test_min_slack_keeps_work_near_its_own_deadline_running(folder: Path) -> None:
    """`min_slack`: a stopped job must still have that long before its own start deadline to start
    again in time; with no deadline known (None), only the other rules apply."""
    on = enabled(folder, min_slack="1h")
    spec = job(max_wait="5m", runtime="2h")
    assert swap_for(a_burst(on), spec, on, [patient(slack_s=1800.0)]) is None
    got = swap_for(a_burst(on), spec, on, [patient("near", slack_s=1800.0), patient("far", slack_s=7200.0)])
    assert got is not None and got.victim.key == "far"
    assert swap_for(a_burst(on), spec, on, [patient(slack_s=None)]) is not None


@pytest.mark.parametrize(
    ("lab", "other", "stopped"),
    [
        (1.5, 0.25, False),  # lab over its share and 6x other's ratio: fair share owes other
        (1.2, 0.6, False),  # over its share, exactly the gap (2x)
        (1.5, 0.9, True),  # over its share but under the gap: near parity ratios cross by the hour
        (0.9, 0.1, True),  # 9x apart, yet lab is under its own share: it owes nobody
        (1.0, 0.2, True),  # at its share, not over it
    ],
)
def test_an_over_share_tenant_does_not_stop_an_under_share_tenants_patient_job(
    folder: Path, lab: float, other: float, stopped: bool
) -> None:
    """Held-out review: 17 of 24 swaps stopped an under-share tenant's patient work for an over-share
    tenant's late jobs. `lab`'s burst passes over `other`'s job only when lab is over its own share
    and `burst.firm_deadline_share_gap` (2) times other's ratio; two small tenants near 0 still swap."""
    on = enabled(folder)
    assert on.burst.firm_deadline_share_gap == 2
    spec = job(max_wait="5m", runtime="2h")
    ratios = {"lab": lab, "other": other}
    got = swap_for(a_burst(on), spec, on, [patient(tenant="other")], TenantId("lab"), ratios)
    assert (got is not None) == stopped
    assert swap_for(a_burst(on), spec, on, [patient(tenant="lab")], TenantId("lab"), ratios) is not None
