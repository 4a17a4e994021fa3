"""The simulator's side of `burst.preempt_patient`: stop a patient on-prem job for a burst.

After the policy decides to burst a job, `swap_instead` asks the pure `broker.burst.swap.swap_for`
with the running on-prem jobs; when it names one, that job is stopped (its units free now, its
work since its start or last checkpoint lost, the rest of its prepaid on-prem run refunded) and
goes back to the queue, decided again a second later as the live dispatcher requeues a stopped
job, and the bursting job starts on-prem in its place. Live, the stopped job gets the reclaim
grace first and the job starts when it has stopped: under a minute, not modelled here.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

from broker.burst.swap import (
    Preemptible,
    burst_premiums,
    home_offers,
    lost_cost,
    may_stop,
    partition_prices,
    swap_for,
    work_lost_s,
)
from broker.decision import Decision
from broker.fairshare import resolve_share
from broker.fairshare.reclaim import Running, holding_quota
from broker.model import Offer
from broker.sim.jobs import SimJob
from broker.sim.metrics import carbon_g
from broker.sim.state import TIMER

if TYPE_CHECKING:
    from broker.sim.engine import Engine


def swap_instead(eng: Engine, job: SimJob, d: Decision) -> Offer | None:
    """The on-prem offer `job` runs on instead of the burst `d`, a patient job stopped for it;
    None: the burst stands (the knob is off, or no running job qualifies)."""
    cfg = eng.policy.burst.preempt_patient
    if not cfg.enabled or not d.burst or d.offer is None or job.spec.resources.nodes > 1:
        return None
    homes = home_offers(d, eng.policy)
    premiums = burst_premiums(job.spec, d.offer, homes, eng.policy)
    prices, patient, now_s = partition_prices(eng.policy), cfg.min_max_wait.total_seconds(), eng.t
    min_slack, jobs, states, need = cfg.min_slack.total_seconds(), eng.jobs, eng.state, job.demand
    running: list[Preemptible] = []
    for key, premium in premiums.items():
        if premium <= 0:
            continue  # (`may_stop` stops nothing for it)
        price = prices.get(key, 0.0)
        guaranteed: set[int] | None = None
        for v in eng.projected.running.running.get(key, ()):
            vj = jobs[v]
            if vj.max_wait_s < patient or vj.demand < need:
                continue  # (a quick skip of most running jobs, on `may_stop`'s tests; it decides below)
            slack = vj.arrival_s + vj.max_wait_s - now_s  # (its due as the queue orders it)
            if slack < min_slack:
                continue
            vs = states[v]
            ran = now_s - vs.running_since
            cp = vj.spec.checkpoint
            every = None if cp is None else cp.interval.total_seconds()
            lost = lost_cost(price, vj.demand, work_lost_s(ran, every))
            gang, restarts = vj.spec.resources.nodes > 1, vs.rec.attempts - 1
            # Only the jobs `swap_for` could take are listed (the answer is the same, without
            # building a candidate of every running job); quotas are read only when one is.
            if not may_stop(
                cfg, job.demand, premium, lost, units=vj.demand, max_wait_s=vj.max_wait_s, restarts=restarts,
                gang=gang, slack_s=slack,
            ):
                continue
            if guaranteed is None:
                guaranteed = _in_quota(eng, key)
            running.append(
                Preemptible(
                    str(v),
                    key,
                    vj.demand,
                    ran,
                    every,
                    vj.max_wait_s,
                    restarts,
                    gang,
                    vj.tenant,
                    v in guaranteed,
                    slack,
                )
            )
    if not running:
        return None
    swap = swap_for(d, job.spec, eng.policy, running, job.tenant, eng.share_ratios(job.tenant))
    if swap is None:
        return None
    stop(eng, int(swap.victim.key), swap.victim.partition)
    return swap.offer


def stop(eng: Engine, v: int, key: str) -> None:
    """Stop job `v` running on partition `key` now and queue it again."""
    vj, vs = eng.jobs[v], eng.state[v]
    assert vs.offer is not None
    ran = eng.t - vs.running_since
    eng.parts[key].finish(eng.t, vj.demand, eng.projected.running.ended(key, vj, finished=False))
    eng.fair.ended(str(v), eng.epoch + timedelta(seconds=eng.t))
    # Its start charged the whole run left; take back what it will not run now.
    unrun_h = max(0.0, vj.runtime_s - vs.done_s - ran) / 3600
    nodes = vj.spec.resources.nodes
    vs.rec.cost_onprem -= eng._price(vs.offer) * unrun_h * nodes
    vs.rec.carbon_g -= carbon_g(eng.policy, vs.offer, unrun_h * nodes)
    vs.rec.onprem_acc_h -= vj.demand * unrun_h
    cp = vj.spec.checkpoint
    if cp is not None:  # it resumes from its last checkpoint
        every = cp.interval.total_seconds()
        vs.done_s = min(vj.runtime_s, vs.done_s + math.floor(ran / every) * every)
    vs.rec.preempted += 1
    vs.queued, vs.gen, vs.offer = True, vs.gen + 1, None
    eng.queued += 1
    vs.timer_ver += 1
    eng._push(eng.t + 1.0, TIMER, v, vs.timer_ver)


def _in_quota(eng: Engine, key: str) -> set[int]:
    """The jobs running on partition `key` within their tenant's guaranteed quota there, wholly or
    in part (fair share: the earliest started count first, as reclaim counts them)."""
    runs = eng.projected.running.running.get(key, {})
    quotas = {t: resolve_share(eng.policy, t).quota.get(key, 0) for t in {r[4] for r in runs.values()}}
    if not any(quotas.values()):
        return set()
    at = [
        Running(str(v), r[4], r[3], eng.epoch + timedelta(seconds=eng.state[v].running_since))
        for v, r in runs.items()
    ]
    return {int(a) for a in holding_quota(at, quotas)}
