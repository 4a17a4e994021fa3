"""The burst hysteresis (`burst.wait_model: fluid`) is a duration: a step of the broker's wall
clock (NTP, a resumed VM) neither cuts it short nor stretches it (review of issues 4 and 6).

The live planner remembered when each job's burst condition was first seen on the wall clock, so
a step forward of the hysteresis (10 min) one minute in burst the job at once, and a step back by
an hour held it an hour longer, as blocks and breakers did before they moved to the clock that
never steps (tests/crash/test_clock_jump.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision
from broker.model import Job, JobId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.sim.engine import Engine
from broker.sim.jobs import build_jobs
from broker.sim.scenario import Scenario
from broker.sim.strategies import PolicyStrategy
from broker.sim.traces import TraceJob
from tests.sim.conftest import CONFIGS


class SteppingClock:
    """A wall clock a test steps, and a monotonic one only real time moves (as NTP leaves it)."""

    def __init__(self, start: datetime) -> None:
        self.wall, self.mono = start, 1000.0

    def now(self) -> datetime:
        return self.wall

    def ticks(self) -> float:
        return self.mono

    def wait(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def _world(tmp_path: Path) -> tuple[Planner, SteppingClock, Engine, Job]:
    for item in CONFIGS.iterdir():
        (tmp_path / item.name).symlink_to(item)
    text = (CONFIGS / "policy-sim.yaml").read_text()
    projected = "  wait_model: projected\n  late_wait_factor: 1.5\n"
    assert projected in text
    path = tmp_path / "policy-fluid.yaml"
    path.write_text(text.replace(projected, "  wait_model: fluid\n  late_wait_factor: 1.0\n"))
    watcher = PolicyWatcher(path)
    policy = watcher.current
    scenario = Scenario(seed=3, onprem_gpus=16)
    trace = [TraceJob("j0", 0.0, 3 * 3600, count=8, tenant="pku-nlp", max_wait_s=3600.0)]
    [sim_job] = build_jobs(trace, policy, scenario)
    engine = Engine(policy, [sim_job], scenario, PolicyStrategy(policy))
    for part in engine.parts.values():  # on-prem full for hours: the job's wait is long
        if part.accelerated:
            part.start(part.total, 6 * 3600.0)
    clock = SteppingClock(sim_job.created_at)
    job = Job(id=JobId(sim_job.id), tenant=sim_job.tenant, spec=sim_job.spec,
              created_at=sim_job.created_at, updated_at=sim_job.created_at)
    return Planner(watcher, clock), clock, engine, job


def _decide(planner: Planner, clock: SteppingClock, engine: Engine, job: Job) -> Decision:
    snap = PassSnapshot(now=clock.now(), offers=engine.book.offers(0.0), capacity_total=engine.book.totals,
                        routes=engine.clouds.states(0.0, clock.now()))
    snap.money[job.tenant] = engine.ledger.money(job.tenant, clock.now())
    return planner.decide(job, snap, store=None)  # type: ignore[arg-type]


def test_a_wall_clock_step_forward_does_not_cut_the_hysteresis_short(tmp_path: Path) -> None:
    planner, clock, engine, job = _world(tmp_path)
    first = _decide(planner, clock, engine, job)
    assert first.action == Action.WAIT and "hysteresis" in first.reasons[-1], first.reasons
    clock.wait(60)
    clock.wall += timedelta(minutes=10)  # NTP steps the wall clock; one real minute has passed
    stepped = _decide(planner, clock, engine, job)
    assert stepped.action == Action.WAIT and "held 60s" in stepped.reasons[-1], stepped.reasons
    clock.wait(9 * 60)  # the whole 10 minutes have now passed
    assert _decide(planner, clock, engine, job).burst


def test_a_wall_clock_step_back_does_not_stretch_the_hysteresis(tmp_path: Path) -> None:
    planner, clock, engine, job = _world(tmp_path)
    assert _decide(planner, clock, engine, job).action == Action.WAIT
    clock.wait(60)
    clock.wall -= timedelta(hours=1)
    clock.wait(9 * 60)
    assert _decide(planner, clock, engine, job).burst
