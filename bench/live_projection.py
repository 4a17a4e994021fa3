"""Cost of the live projected wait per decision as the queue deepens (README figures).

    .venv/bin/python bench/live_projection.py [--depths 1000 10000 100000] [--json]

One on-prem partition of 1,000 accelerators, all busy with 1,000 running one-unit jobs in a
real SQLite store; a full dispatch pass then projects and records `depth` queued one-unit jobs
that all wait there: every `broker.dispatch.waits.LiveWaits` call `Planner.decide` makes per
job (projection, launches ahead, the explain note on the decision, record). The line is
list-scheduled once per waiter, so a decision's cost should not grow with the depth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker.burst.snapshot import PassSnapshot  # noqa: E402
from broker.decision import Action, Decision, DecisionFacts  # noqa: E402
from broker.dispatch.waits import LiveWaits  # noqa: E402
from broker.jobspec import Resources  # noqa: E402
from broker.model import AttemptState, Job, JobId, JobSpec, JobState, Offer, SiteId, TenantId  # noqa: E402
from broker.policy import Policy, load_policy  # noqa: E402
from broker.store import JobStore, SqliteStore, Submission  # noqa: E402

UNITS = 1000
NOW = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
POLICY = """\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - {id: onprem, adapter: local, country: CN, residency: cn-mainland,
     partitions: [{name: a800, accelerator: A800, count_per_node: 8, price_hour: 14.0}]}
tenants:
  - {id: lab, kind: university, entity_country: CN}
burst: {wait_model: projected}
compliance: {residency: {zones: {cn-mainland: {countries: [CN]}}}}
"""
OFFER = Offer(
    site=SiteId("onprem"), instance_type="a800", accelerator="A800", count=8, price_per_hour=14.0, free=0
)


def spec(i: int) -> JobSpec:
    return JobSpec(
        name=f"j{i}",
        command=("true",),
        runtime_estimate=timedelta(minutes=30 + i % 90),
        resources=Resources.model_validate({"accelerators": {"count": 1, "any_of": ["A800"]}}),
    )


def busy_store(folder: Path) -> JobStore:
    """A store with UNITS one-unit jobs running on the partition, started over the last hour."""
    store = SqliteStore(folder / "broker.db")
    jobs = store.submit(TenantId("lab"), [Submission(spec(i)) for i in range(UNITS)], NOW)
    for i, (job, _) in enumerate(jobs):
        started = NOW - timedelta(seconds=3.6 * i)
        store.transition(job.id, JobState.PLACING, started)
        store.transition(job.id, JobState.PROVISIONING, started)
        attempt = store.create_attempt(job.id, OFFER.site, OFFER, f"tok-{i}", started)
        store.update_attempt(attempt.id, started, backend_id=str(i), state=AttemptState.RUNNING)
        store.transition(job.id, JobState.RUNNING, started, kind="running")
    return store


def one_pass(policy: Policy, store: JobStore, depth: int) -> list[float]:
    """Seconds per decision (projection, launches ahead, explain note, record) over a full pass
    of `depth` waiting jobs."""
    snap = PassSnapshot(now=NOW, offers=[OFFER], capacity_total={OFFER.partition: UNITS})
    waits = LiveWaits()
    waits.noted(snap, store.live_attempts())
    waits.begin_pass(full=True)
    out = []
    for i in range(depth):
        job = Job(id=JobId(f"q{i}"), tenant=TenantId("lab"), spec=spec(i), created_at=NOW, updated_at=NOW)
        started = time.perf_counter()
        # Every `LiveWaits` call `Planner.decide` makes for a job, in its order (decide() itself,
        # the placement and the burst rule, is not timed: it is the same with either model).
        got = waits.for_job(policy, job.spec, snap, store, frozenset())
        assert got is not None
        waits.launches_ahead(policy, job.spec, job.tenant, job.created_at)
        wait_s = round(got[OFFER.partition])
        facts = DecisionFacts(
            onprem_site="onprem", onprem_partition=OFFER.partition, onprem_expected_wait_s=wait_s
        )
        asked = Decision(Action.WAIT, OFFER, facts=facts)
        decision = waits.explained(asked, snap, "lab", store, projected=got)
        assert decision.projection is not None
        waits.record(job, decision, policy, snap, store, i + 1)
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--depths", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("accelerators.yaml", "regimes.yaml"):
            shutil.copy(ROOT / "configs" / name, folder / name)
        (folder / "policy.yaml").write_text(POLICY)
        policy = load_policy(folder / "policy.yaml")
        store = busy_store(folder)
        rows = []
        for depth in args.depths:
            times = sorted(one_pass(policy, store, depth))
            rows.append({
                "depth": depth,
                "pass_s": round(sum(times), 2),
                "per_decision_us_p50": round(statistics.median(times) * 1e6, 1),
                "per_decision_us_p99": round(times[int(0.99 * (len(times) - 1))] * 1e6, 1),
            })
        store.close()
    if args.json:
        print(json.dumps({"running_jobs": UNITS, "rows": rows}, indent=2))
    else:
        for r in rows:
            print(f"depth {r['depth']:>7}: pass {r['pass_s']:>7.2f} s, per decision p50 "
                  f"{r['per_decision_us_p50']} us, p99 {r['per_decision_us_p99']} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
