"""How the simulator lays its work out over processes (issue 15, speed): the forked side tasks
(baselines, offline schedule, bound) give the figures of the one-process path, and while the
policy run holds a core only one of them runs at a time on two cores (no timings asserted:
the order of the tasks' start and end stamps)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from broker.policy import Policy, load_policy
from broker.sim import run as sim_run
from broker.sim.jobs import SimJob, build_jobs
from broker.sim.run import _side_slots, simulate
from broker.sim.scenario import Scenario, load_scenario
from broker.sim.traces import read_trace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRACE = CONFIGS / "traces/alibaba-gpu-v2023-openb-pods.csv.gz"


def _world(n: int = 300) -> tuple[Policy, list[SimJob], Scenario]:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/alibaba-peak.yaml").model_copy(update={"time_scale": 2000})
    trace, _ = read_trace(TRACE, max_runtime_s=scenario.max_runtime_s)
    return policy, build_jobs(trace[-n:], policy, scenario), scenario


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if k not in ("sim_wall_s", "lower_bound_s", "offline_s")}
    out["strategies"] = {
        n: {k: v for k, v in s.items() if k != "wall_s"} for n, s in result["strategies"].items()
    }
    return out


@pytest.mark.skipif(not sim_run._can_fork(), reason="needs fork and more than one core")
def test_the_forked_side_tasks_give_the_figures_of_one_process() -> None:
    policy, jobs, scenario = _world()
    forked = simulate(policy, jobs, scenario).result
    alone = simulate(policy, jobs, scenario, parallel=False).result
    assert forked["offline"]["method"] and forked["lower_bound_cost"] is not None
    assert _strip(forked) == _strip(alone)


def test_side_tasks_beside_the_policy_run_leave_it_a_core() -> None:
    assert [_side_slots(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 2, 2, 2]


def _stamped(log: Path, name: str, fn: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        with log.open("a") as f:
            f.write(f"start {name} {time.monotonic()}\n")
        try:
            return fn(*args, **kwargs)
        finally:
            with log.open("a") as f:
                f.write(f"end {name} {time.monotonic()}\n")

    return run


def _ended(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.startswith("end "))


@pytest.mark.skipif(not sim_run._can_fork(), reason="needs fork and more than one core")
def test_one_side_task_at_a_time_beside_the_policy_run_on_two_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "stamps"
    log.write_text("")
    policy, jobs, scenario = _world(200)
    world = sim_run._World
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(world, "baseline", _stamped(log, "baseline", world.baseline))
    monkeypatch.setattr(world, "offline", _stamped(log, "offline", world.offline))
    monkeypatch.setattr(world, "bound", _stamped(log, "bound", world.bound))
    policy_run = world.policy_run

    def long_policy_run(self: Any) -> Any:
        out = policy_run(self)
        deadline = time.monotonic() + 120  # hold the "core" until three side tasks ended
        while _ended(log) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        with log.open("a") as f:
            f.write(f"policy-done policy {time.monotonic()}\n")
        return out

    monkeypatch.setattr(world, "policy_run", long_policy_run)
    simulate(policy, jobs, scenario)
    lines = (line.split() for line in log.read_text().splitlines())
    events = sorted((float(t), kind) for kind, _, t in lines)
    policy_done = next(t for t, kind in events if kind == "policy-done")
    running, most = 0, 0
    for t, kind in events:
        if t > policy_done:
            break
        running += {"start": 1, "end": -1}.get(kind, 0)
        most = max(most, running)
    assert _ended(log) == 5 and most == 1, events


def test_a_record_pickles_to_an_equal_record() -> None:
    import dataclasses
    import math
    import pickle

    from broker.sim.metrics import JobRecord

    names = [f.name for f in dataclasses.fields(JobRecord)]
    # Every field a value of its own (no two alike), so a field read or set out of order shows.
    values: dict[str, Any] = {n: (f"t-{n}" if n == "tenant" else i + 0.5) for i, n in enumerate(names)}
    rec = JobRecord(**values)
    rec.burst, rec.rejected, rec.compliant, rec.spot, rec.spot_over_limit = True, False, False, True, False
    rec.attempts, rec.interruptions, rec.decisions = 3, 4, 5
    back = pickle.loads(pickle.dumps([rec, JobRecord()], protocol=pickle.HIGHEST_PROTOCOL))
    assert [getattr(back[0], n) for n in names] == [getattr(rec, n) for n in names]
    assert math.isnan(back[1].start_s) and back[1].tenant == "" and back[1].compliant


class _Probe:
    """Unpickled in the main process: notes the collector's young threshold at that moment."""

    seen: list[int] = []

    def __init__(self) -> None:
        self.state = 1  # (pickle calls __setstate__ only for an object with state)

    def __setstate__(self, state: dict[str, Any]) -> None:
        import gc

        _Probe.seen.append(gc.get_threshold()[0])
        self.__dict__.update(state)  # (the side worker pickles it again for the main process)


@pytest.mark.skipif(not sim_run._can_fork(), reason="needs fork and more than one core")
def test_the_side_results_are_unpickled_with_fewer_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.sim.collector import YOUNG

    policy, jobs, scenario = _world(100)
    bound = sim_run._World.bound

    def probed(self: Any, *args: Any) -> Any:
        # The probe rides along with the bound's results to the main process.
        got = bound(self, *args)
        got.solved[-1] = _Probe()  # type: ignore[assignment]
        return got

    monkeypatch.setattr(sim_run._World, "bound", probed)
    _Probe.seen.clear()
    simulate(policy, jobs, scenario, baselines=())
    assert _Probe.seen == [YOUNG]  # (the side worker's own unpickling is in its process, not here)


class _Stop(Exception):
    """Raised by a progress callback to stop a simulation midway (a user's cancel)."""


@pytest.mark.skipif(not sim_run._can_fork(), reason="needs fork and more than one core")
def test_a_raise_during_the_policy_run_leaves_no_side_slots_behind() -> None:
    policy, jobs, scenario = _world(100)

    def stop_at_policy(phase: str, done: int, total: int) -> None:
        if phase == "policy" and done == total:
            raise _Stop

    with pytest.raises(_Stop):
        simulate(policy, jobs, scenario, progress=stop_at_policy)
    # The semaphore and the worker's task, set for that run's fork, went with it.
    assert sim_run._SLOTS is None and sim_run._TASK is None
    again = simulate(policy, jobs, scenario).result
    assert _strip(again) == _strip(simulate(policy, jobs, scenario, parallel=False).result)
