"""A burst running across a Beijing month's end is counted in each month for the part it ran there
(szb serve on a data dir whose store the broker's own ledger wrote, Alibaba on the ECS double).

Held-out review of issue 6: spend was filed by attempt under the month the attempt began, so a
burst from 23:00 on the last day to 02:00 on the 1st charged all three hours to the month before:
the new month's budget and `szb spend` showed none of the two hours run in it, and the old month
was charged for hours it never had.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst.money import BEIJING
from broker.clock import ManualClock
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.spend import SpendLedger
from broker.model import AttemptState, JobSpec, JobState, Offer, SiteId, TenantId
from broker.policy import load_policy
from broker.store import JobMove, SqliteStore, Submission
from tests.brokerproc import szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN
from tests.clouds.ecs_a10 import A10, ecs
from tests.clouds.test_money_edges import policy
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

__all__ = ["ecs"]

ROW = f"{A10},A10,1,8,30,10.0,,cn-beijing,cn-beijing-i,CNY"  # an A10 at 10 CNY an hour
POLICY = policy().replace("{id: mt, kind: sme, entity_country: CN}",
                          "{id: mt, kind: sme, entity_country: CN, monthly_budget: 100}")


def _month_start(when: datetime) -> datetime:
    """The first instant of `when`'s Beijing month."""
    return when.astimezone(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _burst_across(setup: on_moto.BrokerSetup, folder: Path, month_start: datetime) -> None:
    """The broker's ledger reserves and settles a 3 h burst from 23:00 before `month_start`
    (Beijing) in the data dir's store, as a live broker does, the job then done."""
    setup.write(folder)
    pol = load_policy(folder / "policy.yaml")
    (folder / "data").mkdir()
    store = SqliteStore(folder / "data" / "broker.db")
    began, ended = month_start - timedelta(hours=1), month_start + timedelta(hours=2)
    spec = JobSpec(name="late", command=("true",), runtime_estimate=timedelta(hours=3))
    [(job, _)] = store.submit(TenantId("mt"), [Submission(spec)], began)
    for state in (JobState.PLACING, JobState.PROVISIONING):
        store.transition(job.id, state, began)
    offer = Offer(site=SiteId("ali-bj"), instance_type=A10, accelerator="A10", count=1, price_per_hour=10.0)
    attempt = store.create_attempt(job.id, offer.site, offer, "tok", began)
    decision = Decision(action=Action.RUN, offer=offer, burst=True,
                        facts=DecisionFacts(currency="CNY", cash=30.0, voucher=0.0))
    ledger = SpendLedger(lambda: pol, ManualClock(began))
    assert ledger.reserve(job, attempt, decision, store)
    moves = [JobMove(JobState.RUNNING, "running", expect=JobState.PROVISIONING),
             JobMove(JobState.SUCCEEDED, "finished", fields={"exit_code": 0})]
    store.update_attempt(attempt.id, ended, state=AttemptState.SUCCEEDED, moves=moves)
    ledger.clock = ManualClock(ended)
    ledger.settle(store.get(job.id), attempt, store)
    store.close()


def test_a_burst_across_a_months_end_is_spent_in_each_month_for_its_part(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker, tmp_path: Path
) -> None:
    this_month = _month_start(datetime.now(UTC))
    setup = on_moto.BrokerSetup(
        POLICY,
        tokens={"mt": TOKEN},
        sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
        catalogs={"ali.csv": on_moto.catalog(ROW, currency=True)},
    )
    _burst_across(setup, tmp_path, this_month)
    broker = start_broker(setup)
    now = json.loads(szb(broker, TOKEN, "spend", "-o", "json").stdout)
    # 2 of its 3 hours (20 of 30 CNY) ran this month: this month's budget and spend count them.
    assert now["total_spent"] == 20.0, now
    assert now["budget_left"] == 80.0, now
    last = _month_start(this_month - timedelta(days=1))
    before = szb(broker, TOKEN, "spend", "--since", last.isoformat(), "--until", this_month.isoformat(),
                 "--by", "day", "-o", "json")
    assert before.returncode == 0, before.stderr
    body = json.loads(before.stdout)
    # ... and the hour before midnight was last month's, on its last day.
    last_day = (this_month - timedelta(days=1)).date().isoformat()
    assert [(line["day"], line["spent"]) for line in body["lines"]] == [(last_day, 10.0)], body
    both = json.loads(
        szb(broker, TOKEN, "spend", "--since", last.isoformat(), "--by", "day", "-o", "json").stdout
    )
    assert [(line["day"], line["spent"]) for line in both["lines"]] == [
        (last_day, 10.0), (this_month.date().isoformat(), 20.0)], both
    assert both["total_spent"] == 30.0
