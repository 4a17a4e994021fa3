"""Runs with fewer garbage collections (issue 15, speed) decide exactly as with the collector's
defaults, and the collector's settings come back afterwards."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

from broker.policy import load_policy
from broker.sim.collector import YOUNG, fewer_collections
from broker.sim.engine import Engine
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import load_scenario
from broker.sim.strategies import PolicyStrategy
from broker.sim.traces import read_trace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_settings_hold_inside_nest_and_come_back() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert gc.isenabled()
    with fewer_collections():
        assert gc.get_threshold()[0] == YOUNG and gc.get_freeze_count() > frozen
        assert not gc.isenabled()  # no collection on its own inside
        with fewer_collections():  # re-entrant: the inner block changes nothing
            assert gc.get_threshold()[0] == YOUNG and not gc.isenabled()
        assert gc.get_threshold()[0] == YOUNG and not gc.isenabled()
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen and gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    try:
        with fewer_collections():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_policy_run_with_fewer_collections_gives_the_same_records() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/alibaba-peak.yaml")
    trace, _ = read_trace(
        CONFIGS / "traces/alibaba-gpu-v2023-openb-pods.csv.gz", max_runtime_s=scenario.max_runtime_s
    )
    jobs = build_jobs(trace[:600], policy, scenario)

    def records(fewer: bool) -> list[tuple[object, ...]]:
        engine = Engine(policy, jobs, scenario, PolicyStrategy(policy))
        if fewer:
            with fewer_collections():
                got = engine.run()
        else:
            got = engine.run()
        return [dataclasses.astuple(r) for r in got.records]

    plain = records(False)
    assert len(plain) == 600
    assert records(True) == plain
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    sim = simulate(policy, jobs, scenario, baselines=("onprem-only",), lower_bound=False, parallel=False)
    assert sim.result["strategies"]["policy"]["jobs"] == len(jobs)
    # a whole run leaves them as found
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == (before, frozen, True)
