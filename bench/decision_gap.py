"""Where the policy's cost parts from the offline schedule's, job by job (issue 15's yardstick).

    .venv/bin/python bench/decision_gap.py [--json] [--only NAME ...] [--policy FILE] [--burst KEY=VALUE ...]
        [--trace FILE]

Runs the policy alone on each trace scenario of `bench/decision_quality.py` (same names, policy,
`--burst` overrides and `--trace`) and the clairvoyant offline schedule on the same jobs, then splits the
difference of their costs by job into: `partition choice` (both run the job on-prem), `which
jobs burst` (one bursts what the other keeps at home, in both directions), `cloud offer choice`
(both burst; the policy's offer at its expected cost against the cheapest allowed one, the
yardstick's pick) and `spot as it fell` (both burst; what the policy's run paid against its
offer's expected cost: interruptions, stock-outs). The offer choice is listed per (tenant,
policy's site, cheapest offer's site) with `preference`: by how much the sites'
`preference_per_hour` favoured the policy's pick over the cheapest (the cheapest's preference
term less the pick's), a part of the policy's objective the money-only yardstick does not count.
`late_jobs` counts the jobs each started late: a policy below the offline schedule got there by
lateness (the offline schedule starts every job it can on time).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import decision_quality as dq  # noqa: E402

from broker.policy import Policy  # noqa: E402
from broker.sim.engine import Engine  # noqa: E402
from broker.sim.jobs import SimJob  # noqa: E402
from broker.sim.metrics import late  # noqa: E402
from broker.sim.run import references  # noqa: E402
from broker.sim.scenario import Scenario  # noqa: E402
from broker.sim.strategies import PolicyStrategy  # noqa: E402

BUCKETS = ("partition choice", "which jobs burst", "cloud offer choice", "spot as it fell")


def gap(policy: Policy, jobs: Sequence[SimJob], scenario: Scenario) -> dict[str, Any]:
    """The policy's run against the offline schedule on the same jobs, split job by job."""
    engine = Engine(policy, jobs, scenario, PolicyStrategy(policy))
    run = engine.run()
    off, _, facts = references(policy, jobs, scenario)  # as `szb simulate` reports it, budgets kept
    assert off is not None
    prefs = {s.id: s.preference_per_hour * policy.objective.preference for s in policy.sites}
    buckets = dict.fromkeys(BUCKETS, 0.0)
    moved = [[0, 0.0], [0, 0.0]]  # burst but kept at home offline; kept at home but burst offline
    offers: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for i, rec in enumerate(run.records):
        f, placed = facts[i], off.placements.get(i)
        theirs = f.onprem[placed[0]] if placed is not None else (f.cloud_cost or 0.0)
        diff = rec.cost - theirs
        if rec.burst == (placed is not None):  # one bursts what the other keeps at home
            side = moved[0 if rec.burst else 1]
            side[0], side[1] = side[0] + 1, side[1] + diff
            buckets["which jobs burst"] += diff
            continue
        if not rec.burst:
            buckets["partition choice"] += diff
            continue
        offer = engine.state[i].offer
        expected = f.cost.get(offer.key) if offer is not None else None
        if offer is None or expected is None or not f.cloud_by_cost:
            buckets["spot as it fell"] += diff
            continue
        buckets["cloud offer choice"] += expected - theirs
        buckets["spot as it fell"] += rec.cost - expected
        cheapest = f.cloud_by_cost[0]
        row = offers[(rec.tenant, _site(offer.site, offer.spot), _site(cheapest.site, cheapest.spot))]
        hours = jobs[i].runtime_s / 3600
        row[0] += 1
        row[1] += expected - theirs
        row[2] += (prefs.get(cheapest.site, 0.0) - prefs.get(offer.site, 0.0)) * hours
    top = sorted(offers.items(), key=lambda kv: -kv[1][1])
    return {
        "policy_cost": round(sum(r.cost for r in run.records), 2),
        "offline_cost": round(off.cost, 2),
        "gap": round(sum(r.cost for r in run.records) - off.cost, 2),
        "late_jobs": {
            "policy": sum(late(r) for r in run.records if not r.rejected),
            "offline": off.late_jobs,
        },
        "buckets": {k: round(v, 2) for k, v in buckets.items()},
        "burst_kept_home_offline": {"jobs": moved[0][0], "cny": round(moved[0][1], 2)},
        "home_burst_offline": {"jobs": moved[1][0], "cny": round(moved[1][1], 2)},
        "cloud_offer_choice": [
            {"tenant": t, "policy_site": mine, "cheapest_site": cheap, "jobs": int(n),
             "cny": round(cny, 2), "preference": round(pref, 2)}
            for (t, mine, cheap), (n, cny, pref) in top
            if abs(cny) >= 0.005
        ],
    }


def _split(name: str) -> dict[str, Any]:
    """One scenario's gap, with its trace and size."""
    policy, scenario, jobs, _ = dq.scenario_jobs(name, 0)
    return {"scenario": name, "trace": str(dq.TRACE), "jobs": len(jobs), **gap(policy, jobs, scenario)}


def _site(site: str, spot: bool) -> str:
    return f"{site} (spot)" if spot else site


def main() -> int:
    # The trace scenarios only: the synthetic one has no offline schedule to split against.
    scenarios = [n for n in dq.STANDARD if not n.startswith("synthetic")]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dq.input_flags(parser, scenarios)
    args = parser.parse_args()
    dq.use_flags(args)
    results = dq.each(args.only or scenarios, _split)
    if isinstance(results, int):
        return results
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        mine, theirs = r["policy_cost"], r["offline_cost"]
        n = r["late_jobs"]
        mine_late, theirs_late = f"{mine:,.2f} ({n['policy']} late)", f"{theirs:,.2f} ({n['offline']} late)"
        print(f"{r['scenario']}: policy {mine_late} - offline {theirs_late} = {r['gap']:,.2f}")
        for k, v in r["buckets"].items():
            print(f"  {k:20} {v:>10,.2f}")
        a, b = r["burst_kept_home_offline"], r["home_burst_offline"]
        print(f"  (burst, kept home offline: {a['jobs']} jobs {a['cny']:+,.2f}; "
              f"kept home, burst offline: {b['jobs']} jobs {b['cny']:+,.2f})")
        for o in r["cloud_offer_choice"][:5]:
            print(f"  {o['tenant']:12} {o['policy_site']:34} over {o['cheapest_site']:34} "
                  f"{o['jobs']:>5} jobs {o['cny']:>9,.2f} (preference {o['preference']:+,.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
