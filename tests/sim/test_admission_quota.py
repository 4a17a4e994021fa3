"""A replay's arrivals under the live `max_queued_jobs`: a submission while the tenant has that many
unfinished jobs is refused with the live message; once one ends, the next is taken."""

from __future__ import annotations

from pathlib import Path

from broker.policy import load_policy
from broker.sim.admission import Admission
from broker.sim.engine import Engine
from broker.sim.jobs import build_jobs
from broker.sim.scenario import Scenario
from broker.sim.strategies import PolicyStrategy
from broker.sim.traces import TraceJob
from tests.sim.conftest import tiny_policy


def test_a_submission_over_max_queued_jobs_is_refused_until_one_ends(tmp_path: Path) -> None:
    tiny_policy(tmp_path)
    path = tmp_path / "policy.yaml"
    path.write_text(path.read_text() + "limits: {max_queued_jobs: 1}\n")
    policy, scenario = load_policy(path), Scenario(seed=1)
    trace = [TraceJob(f"j{i}", at, 600, count=1, accelerators=("A800",), tenant="t1") for i, at in
             enumerate((0, 60, 1200))]
    admission = Admission(policy)
    engine = Engine(policy, build_jobs(trace, policy, scenario), scenario, PolicyStrategy(policy),
                    admission=admission)
    records = engine.run().records
    assert [r.rejected for r in records] == [False, True, False], records
    assert list(admission.refused) == [1]
    assert "max_queued_jobs (1) exceeded: 1 unfinished job(s) plus 1 new" in admission.refused[1]
    assert records[0].end_s <= 1200 and records[2].end_s > 1200, records


def test_a_tenants_arrivals_at_one_instant_are_admitted_as_one_call(tmp_path: Path) -> None:
    """A held-out review: ten jobs of one `SubmitJobs` call under `max_queued_jobs: 5` were half
    taken, job by job, where the live submit refuses the whole call (`Quotas.admit` with 10 new)."""
    tiny_policy(tmp_path)
    path = tmp_path / "policy.yaml"
    t2 = "  - {id: t2, kind: university, entity_country: CN, monthly_budget: 100000}\n"
    text = path.read_text().replace("  - {id: t1,", t2 + "  - {id: t1,")
    path.write_text(text + "limits: {max_queued_jobs: 5}\n")
    policy, scenario = load_policy(path), Scenario(seed=1)
    call = [TraceJob(f"c{i}", 0, 600, count=1, accelerators=("A800",), tenant="t1") for i in range(10)]
    small = [TraceJob(f"s{i}", 0, 600, count=1, accelerators=("A800",), tenant="t2") for i in range(3)]
    later = [TraceJob("after", 60, 600, count=1, accelerators=("A800",), tenant="t1")]
    admission = Admission(policy)
    jobs = build_jobs([*call, *small, *later], policy, scenario)
    records = Engine(policy, jobs, scenario, PolicyStrategy(policy), admission=admission).run().records
    rejected = {job.tenant: [] for job in jobs}  # (in trace order: the call, t2's three, the later one)
    for job, rec in zip(jobs, records, strict=True):
        rejected[job.tenant].append(rec.rejected)
    assert rejected["t1"] == [True] * 10 + [False], records
    assert "max_queued_jobs (5) exceeded: 0 unfinished job(s) plus 10 new" in admission.refused[0]
    assert rejected["t2"] == [False] * 3  # another tenant's arrivals at the same instant: its own call
