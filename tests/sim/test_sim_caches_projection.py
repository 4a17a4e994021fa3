"""The projected wait model's fast paths give exactly what the plain ones give (issue 15, speed):
the inlined list scheduling over kept-sorted running ends, and the running ends kept as runs
start and end instead of recomputed (same floats, not timings)."""

from __future__ import annotations

import bisect
import heapq
import math
import random

import pytest

from broker.burst.projection import projected_wait_s
from broker.burst.runtimes import RatioLearner
from broker.sim.expected import RunningEnds


def _heap_reference(
    free: int,
    ends: list[tuple[float, int]],
    ahead: list[tuple[int, float]],
    need: int,
    now_s: float,
    give_up_after_s: float,
) -> float:
    """The list scheduling as first written (one heap of every end, a start per job ahead)."""
    heap = list(ends)
    heapq.heapify(heap)
    total = free + sum(u for _, u in heap)
    t = now_s

    def start(units: int) -> bool:
        nonlocal free, t
        if units > total:
            return False
        while free < units:
            if not heap:
                return False
            end, u = heapq.heappop(heap)
            t = max(t, end)
            free += u
        return True

    for units, runtime in ahead:
        if not start(units):
            continue
        if t - now_s > give_up_after_s:
            return t - now_s
        free -= units
        heapq.heappush(heap, (t + runtime, units))
    if not start(need):
        return math.inf
    return t - now_s


def _instance(
    rng: random.Random,
) -> tuple[int, list[tuple[float, int]], list[tuple[int, float]], int, float, float]:
    now = rng.choice([0.0, 1234.5, 1e6 + 0.1])
    # Ends on a coarse grid so that equal ends (with equal or different units) are common, and
    # some ends lie in the past (a job running past its estimate).
    ends = [
        (now + rng.choice([-300.0, 0.0, 60.0, 0.1 * rng.randrange(1, 90000)]), rng.randint(1, 8))
        for _ in range(rng.randint(0, 40))
    ]
    free = rng.randint(0, 8)
    total = free + sum(u for _, u in ends)
    ahead = [
        (rng.randint(1, max(1, total + 2)), rng.choice([60.0, 3600.0, rng.uniform(1, 20000)]))
        for _ in range(rng.randint(0, 30))
    ]
    give_up = rng.choice([math.inf, 0.0, 600.0, rng.uniform(0, 50000)])
    return free, ends, ahead, rng.randint(1, total + 3), now, give_up


def test_the_inlined_projection_over_sorted_ends_equals_the_heap_projection() -> None:
    rng = random.Random(15)
    early = 0
    for _ in range(4000):
        free, ends, ahead, need, now, give_up = _instance(rng)
        want = _heap_reference(free, ends, ahead, need, now, give_up)
        shuffled = ends[:]
        rng.shuffle(shuffled)
        plain = projected_wait_s(free, shuffled, iter(ahead), need, now, give_up_after_s=give_up)
        total = free + sum(u for _, u in ends)
        kept = projected_wait_s(
            free, sorted(ends), ahead, need, now, give_up_after_s=give_up, total=total, ends_sorted=True
        )
        assert plain == want and kept == want  # the same float, not an approximation
        early += give_up < want < math.inf
    assert early > 100  # the give-up path was taken


def test_running_ends_kept_as_runs_start_and_end_equal_a_recompute() -> None:
    rng = random.Random(7)
    learner = RatioLearner(window=5)
    kept = RunningEnds(["a", "b"], learner)
    live: dict[str, set[int]] = {"a": set(), "b": set()}
    bumps = 0
    for step in range(3000):
        part = rng.choice("ab")
        if live[part] and rng.random() < 0.45:
            key = rng.choice(sorted(live[part]))
            live[part].discard(key)
            kept.running[part].pop(key)
            got = kept._ends.get(part)  # what `ended` does, without a SimJob
            if got is not None and got.version == learner.version:
                got.drop(key)
            else:
                kept._ends.pop(part, None)
        else:
            key = rng.randrange(200)
            live[part].add(key)
            run = (
                float(step),
                rng.choice([600.0, 3600.0, 7200.0]),
                rng.choice([0.0, 300.0]),
                rng.randint(1, 4),
                rng.choice("xyz"),
            )
            kept.add(part, key, run)  # also a restart of a job already running (replaced)
        if rng.random() < 0.02:
            before = learner.version
            learner.observe(rng.choice("xyz"), 1000.0, rng.choice([500.0, 1000.0, 3000.0]))
            bumps += learner.version != before
        if rng.random() < 0.3:
            fresh = RunningEnds([part], learner)
            fresh.running[part] = dict(kept.running[part])
            assert kept.ends(part) == sorted(fresh.ends(part))
            assert kept.units(part) == sum(u for _, u in fresh.ends(part))
    assert bumps > 3  # learned ratios changed along the way


@pytest.mark.parametrize("which", ["ends", "units"])
def test_running_ends_of_an_empty_partition(which: str) -> None:
    kept = RunningEnds(["a"])
    assert getattr(kept, which)("a") == ([] if which == "ends" else 0)


@pytest.mark.parametrize("max_groups", [16, 2])
def test_a_partitions_line_kept_in_order_as_jobs_come_and_go_equals_a_fresh_sort(
    max_groups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.sim.queues
    from broker.sim.backends import Partition
    from broker.sim.queues import ProjectedQueues

    monkeypatch.setattr(broker.sim.queues, "MAX_GROUPS", max_groups)  # 2: sets dropped and made again

    rng = random.Random(5)
    parts = {"p/x": Partition("p/x", 16, True, free=2), "p/y": Partition("p/y", 8, True, free=0)}
    queues = ProjectedQueues(parts)
    for key in range(30):
        queues.running.add(
            rng.choice(list(parts)), key, (0.0, rng.uniform(10, 5000), 0.0, rng.randint(1, 2), "t")
        )
    checked = 0
    groups: set[frozenset[str]] = set()
    for step in range(2500):
        job = rng.randrange(120)
        if rng.random() < 0.35:
            queues.remove(job)
        else:  # a new waiter, or one moved to another partition or re-keyed (re-decided)
            key = (rng.randint(0, 2), float(rng.randrange(50)), float(step), f"j{job}")
            queues.add(
                rng.choice(list(parts)), job, key, rng.randint(1, 8), rng.uniform(60, 9000), rng.choice("abc")
            )
        if rng.random() < 0.3:
            fresh = ProjectedQueues(parts, queues.running)
            fresh.waiting = {k: dict(v) for k, v in queues.waiting.items()}
            probe = (1, float(rng.randrange(50)), 1e9, "probe")
            first = frozenset(rng.sample("abc", rng.randint(0, 2)))
            for part in parts:
                assert queues._ordered(part) == sorted(queues.waiting[part].values())
                assert queues._pairs[part] == [(u, r) for _, u, r, _ in queues._ordered(part)]
                for who, (line, pairs) in queues._groups[part].items():  # each kept set's part
                    assert line == [e for e in queues._ordered(part) if e[3] in who]
                    assert pairs == [(u, r) for _, u, r, _ in line]
                line = queues._ordered(part)  # the jobs of the tenants let first, keyed after the probe
                tail = line[bisect.bisect_left(line, (probe,)) :]
                assert queues._behind(part, probe, first) == [(u, r) for _, u, r, t in tail if t in first]
            units = rng.randint(1, 8)
            got = queues.project(probe, units, 0.0, 1e9, accelerated=True, first=first)
            assert got == fresh.project(probe, units, 0.0, 1e9, accelerated=True, first=first)
            checked += 1
            groups |= {who for part in parts for who in queues._groups[part]}
    assert checked > 500
    assert {len(who) for who in groups} == {0, 1, 2}  # sets of one tenant and of two were kept


def test_baselines_decide_the_same_without_learning_runtime_ratios() -> None:
    """A baseline reads no projection, so its engine skips the learner; the policy's keeps it."""
    from pathlib import Path

    from broker.policy import load_policy
    from broker.sim.baselines import BASELINES, Baseline
    from broker.sim.engine import Engine
    from broker.sim.facts import all_facts
    from broker.sim.jobs import build_jobs
    from broker.sim.scenario import load_scenario
    from broker.sim.strategies import PolicyStrategy
    from broker.sim.traces import read_trace

    configs = Path(__file__).resolve().parents[2] / "configs"
    policy = load_policy(configs / "policy-sim.yaml")
    scenario = load_scenario(configs / "scenarios/alibaba-peak-estimates.yaml")  # estimates err: ratios != 1
    trace_file = configs / "traces/alibaba-gpu-v2023-openb-pods.csv.gz"
    trace, _ = read_trace(trace_file, max_runtime_s=scenario.max_runtime_s)
    jobs = build_jobs(trace[::20][:300], policy, scenario)
    facts = all_facts(jobs, policy)
    for name in BASELINES:
        plain = Engine(policy, jobs, scenario, Baseline(name, policy, facts))  # type: ignore[arg-type]
        plain.projected.running.learns = True
        skipping = Engine(policy, jobs, scenario, Baseline(name, policy, facts))  # type: ignore[arg-type]
        assert not skipping.projected.running.learns
        want, got = plain.run(), skipping.run()
        assert want.runtime_ratios and not got.runtime_ratios
        assert got.records == want.records and got.decisions == want.decisions
    policy_run = Engine(policy, jobs, scenario, PolicyStrategy(policy)).run()
    assert any(r != 1.0 for r in policy_run.runtime_ratios.values())


def test_a_jobs_waits_computed_when_read_equal_every_partition_projected_at_once() -> None:
    """`project_job` computes a partition's wait only when the decision reads it: the same floats
    as `project` over every partition of the job's kind, read in any order, and nothing unread."""
    from pathlib import Path

    from broker.policy import load_policy
    from broker.sim.backends import onprem_partitions
    from broker.sim.jobs import build_jobs
    from broker.sim.queues import ProjectedQueues, dispatch_key
    from broker.sim.scenario import load_scenario
    from broker.sim.synthetic import SyntheticParams, generate

    configs = Path(__file__).resolve().parents[2] / "configs"
    policy = load_policy(configs / "policy-sim.yaml")
    scenario = load_scenario(configs / "scenarios/synthetic-llm.yaml")
    jobs = build_jobs(generate(SyntheticParams(jobs=400), scenario.seed), policy, scenario)
    parts = onprem_partitions(policy, scenario.onprem_gpus)
    rng = random.Random(11)
    queues = ProjectedQueues(parts)
    for p in parts.values():
        p.free = rng.randint(0, 2)
    for job in jobs[:150]:  # running and waiting jobs on the partitions
        name = rng.choice(list(parts))
        if rng.random() < 0.5:
            queues.running.add(name, job.index, (0.0, rng.uniform(60, 9000), 0.0, job.demand, job.tenant))
        else:
            queues.add(name, job.index, dispatch_key(job), job.demand, rng.uniform(60, 9000), job.tenant)
    tenants = sorted({j.tenant for j in jobs})
    kinds = partial = 0
    seen: set[float] = set()
    for job in jobs[150:]:
        now = rng.uniform(0.0, 3000.0)
        ratios = {t: rng.choice([0.0, 0.5, 1.0, 2.0]) for t in tenants}
        lazy = queues.project_job(job, now, ratios)
        remaining = max(0.0, job.arrival_s + job.max_wait_s - now)
        first = frozenset(t for t, r in ratios.items() if r < ratios[job.tenant] and t != job.tenant)
        want = queues.project(
            dispatch_key(job),
            job.demand,
            now,
            max(2 * remaining, remaining + 3600.0),
            accelerated=job.spec.accelerator_count > 0,
            first=first,
        )
        names = list(want)
        rng.shuffle(names)
        assert len(lazy) == len(want) and all(n in lazy for n in want) and "nowhere" not in lazy
        read = names[: rng.randint(1, len(names))]
        assert [lazy.get(n) if k % 2 else lazy[n] for k, n in enumerate(read)] == [want[n] for n in read]
        assert set(lazy._got) == set(read)  # the others were not computed
        partial += len(read) < len(names)
        assert dict(lazy) == want and lazy.get("nowhere") is None
        kinds |= 1 << (job.spec.accelerator_count > 0)
        seen |= set(want.values())
    assert kinds == 3 and partial > 50  # GPU and CPU jobs; some waits never read
    assert len(seen) > 100  # the waits vary (queues ahead, tenants let first)


def test_each_job_of_a_pass_sees_the_backlog_the_pass_added_before_it() -> None:
    """The engine notes what a decision adds to the pass's backlog only for the pass's next jobs
    (not after its last): each job of a many-job pass still sees the queued backlog ahead of it
    plus everything the pass's earlier decisions added, as when every decision was noted."""
    from broker.burst.snapshot import PassSnapshot
    from broker.policy import load_policy
    from broker.sim.engine import Engine
    from broker.sim.jobs import build_jobs
    from broker.sim.scenario import Scenario
    from broker.sim.strategies import PolicyStrategy
    from broker.sim.traces import TraceJob
    from tests.sim.conftest import CONFIGS

    policy = load_policy(CONFIGS / "policy-sim.yaml")
    trace = [TraceJob(f"j{i}", i * 5.0, 3600.0 * (1 + i % 4), count=1 + i % 8) for i in range(40)]
    jobs = build_jobs(trace, policy, Scenario(seed=2, onprem_gpus=32))
    engine = Engine(policy, jobs, Scenario(seed=2, onprem_gpus=32), PolicyStrategy(policy))
    for part in engine.parts.values():  # full: the jobs wait on-prem and join the backlog
        if part.accelerated:
            part.start(part.total, 7200.0)
    seen: list[tuple[int, dict[str, float], dict[str, float], dict[str, float]]] = []
    decide = engine.strategy.decide

    def recording(job, snap: PassSnapshot, money, pending):  # type: ignore[no-untyped-def]
        ahead = {k: fen.prefix(job.index) for k, fen in engine.fen.items()}
        before = dict(snap.backlog_h)
        d = decide(job, snap, money, pending)
        seen.append((job.index, ahead, before, dict(snap.backlog_h)))
        return d

    engine.strategy.decide = recording  # type: ignore[method-assign]
    rng = random.Random(9)
    order = list(range(len(jobs)))
    rng.shuffle(order)
    added_some = 0
    while order:
        n = rng.randint(1, 6)
        batch, order = order[:n], order[n:]
        for j in batch:
            engine.state[j].queued = True
            engine.state[j].gen += 1
        seen.clear()
        engine._pass(batch, "test")
        added: dict[str, float] = {}
        for _, ahead, before, after in seen:
            assert before == {k: v + added.get(k, 0.0) for k, v in ahead.items()}
            for k, v in after.items():
                if v != before.get(k, 0.0):
                    added[k] = added.get(k, 0.0) + v - before.get(k, 0.0)
            added_some += len(seen) > 1 and after != before
    assert added_some > 5  # passes of several jobs, their decisions adding backlog, were met
