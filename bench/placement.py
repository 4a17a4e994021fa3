"""Placement benchmark: 1 job against 100, 1,000 and 10,000 offers with 20 CEL rules.

    .venv/bin/python bench/placement.py --json

Offers are the AWS GPU catalog (configs/catalog/aws_gpu_vms.csv, every region as a site),
replicated with perturbed prices/zones up to the target size. Each decision draws one of a
small mix of jobs and tenants (as a live queue would).

Each case reports wall-clock p50/p99 (perf_counter) and CPU p50/p99 (process_time: what
the decision itself costs on a shared machine), the garbage collections that ran during its
decisions per generation (`gc_collections`: a collection inside a decision is part of its
time), what the p99 cases are (`tail`: the slowest 1% by wall time, how many of them ran a
collection, their job/tenant shapes, and every shape's CPU p50 / p99), and the JSON carries
the machine's load average before and after the run. Like
`szb serve`, the bench freezes what it loaded (`gc.freeze()`) before measuring.

The job mix has 12 (job, tenant) shapes whose cold cost differs ~5x (a 1-GPU job with no
model preference may use every accelerator group; an 8-GPU one a third of them), so a p99
over the mix is the dearest shapes' upper tail, not a rare event.

Four cases are measured side by side at every size (`--modes` picks some):
  cold          nothing cached about the job or the rules (the headline): every rule plan and
                verdict, the rules' value classes of sites and accelerators, and every memo a job
                or the rules filled (the shapes, the scored decisions, the candidate groups, the
                market parts' classes by rule reads and cells by count) are dropped before each
                decision, and each job has its own runtime; the catalog's snapshot stays, as it
                does in a server between catalog refreshes: its offers grouped by (site,
                accelerator) and each group's per-market values (`broker/placement/parts.py`),
                which neither a job nor a rule decides
  cold_regroup  cold, and the snapshot dropped too: the catalog is grouped again and every
                group's values computed again inside each decision (a new catalog per job; the
                definition of "cold" before the fifth pass)
  warm_rules    a new job on a known fleet: the rule plans and verdicts, the rules' value classes
                and the parts' classes and cells kept from earlier decisions (the shapes, scored
                decisions and candidate groups dropped, as in cold)
  repeated      everything kept, jobs from the small mix (the same question asked again)

Every 50th decision of each case (`CHECK_EVERY`) is decided again after the timing on the plain
CEL path (no memo, no native predicate: `RuleSet.fast = False`) and compared verdict by verdict
(`checked_against_plain_cel`, `differing_from_plain_cel`); the bench exits 1 if any differs.

How the offers reach `place()` (`--offers`):
  same      the same list object every decision (the simulator, one dispatcher pass):
            `place()` recognises it by identity and reuses its prepared snapshot
  prepared  an explicit `prepare_offers(offers, policy)` (no identity check per call)
  fresh     a new list every decision (a one-shot caller): grouped and indexed each time
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# numpy (the array scoring of many kept offers) is imported here, as a server loads it before its
# first decisions: importing it starts OpenBLAS's worker thread, which spins for ~0.5 s of CPU
# (`process_time` counts it) and would otherwise land inside the measured decisions
import broker.placement.vector  # noqa: E402,F401
from broker.catalog.instances import load_instance_csv  # noqa: E402
from broker.commands._args import whole_number  # noqa: E402
from broker.model import JobSpec, Offer, TenantId  # noqa: E402
from broker.placement import Explanation, PlacementContext, forget_snapshots, place, prepare_offers  # noqa: E402
from broker.placement.prepared import snapshot  # noqa: E402
from broker.policy import Policy, load_policy  # noqa: E402

RULES = [
    (
        '"h20-is-informed-2025" in hardware.flags && site.operator_country == "US" && '
        'tenant.country_groups.exists(g, g == "D:5" || g == "Macau")'
    ),
    '"prc-3a090-gp10" in hardware.flags && tenant.entity_country == "US"',
    'job.priority == "high" && offer.spot',
    'job.data_residency == "cn-mainland" && site.residency != "cn-mainland"',
    'hardware.class == "3A090.a" && site.country == "RU"',
    'tenant.kind == "sme" && job.accelerators.count > 64',
    'hardware.tpp > 30000.0 && !("3A090.a" in tenant.export_licences)',
    'site.carbon_gco2_kwh > 900.0 && job.priority == "low"',
    "job.runtime_hours > 720.0",
    "hardware.memory_gb < job.accelerators.min_memory_gb",
    '"blocked" in site.labels',
    'tenant.id == "t-university" && site.region == "me-central-1"',
    'job.labels.exists(k, k == "no-cloud") && site.adapter != "slurm"',
    'hardware.vendor == "Huawei" && site.country == "US"',
    "job.cpus > 1000.0",
    "size(job.accelerators.any_of) > 8",
    'hardware.origin_country == "XX"',
    'site.region.startsWith("il-")',
    "tenant.monthly_budget < 0.0",
    "job.max_wait_hours > 1000.0 && hardware.datacenter",
]


def write_policy(tmp: Path) -> Path:
    regions = sorted({r.region for r in load_instance_csv(ROOT / "configs/catalog/aws_gpu_vms.csv")})
    sites = "\n".join(
        f"  - {{id: aws-{r}, adapter: aws, region: {r}, country: {'US' if r.startswith('us') else 'DE'}, "
        f"residency: global, operator_country: US, carbon_gco2_kwh: 400, "
        f"catalog: {{file: {ROOT}/configs/catalog/aws_gpu_vms.csv, region: {r}, currency: USD}}}}"
        for r in regions
    )
    rules = "\n".join(
        f"    - id: r{i}\n      deny: '{expr}'\n      reason: rule {i}" for i, expr in enumerate(RULES)
    )
    text = f"""version: 1
currency: CNY
fx: {{USD: 7.2}}
objective: {{price: 1.0, wait_hour_cost: 40, carbon_g_cost: 0.0002}}
accelerators: {ROOT}/configs/accelerators.yaml
regimes: {ROOT}/configs/regimes.yaml
sites:
{sites}
tenants:
  - {{id: t-university, kind: university, entity_country: CN}}
  - {{id: t-sme, kind: sme, entity_country: SG}}
  - {{id: t-partner, kind: partner, entity_country: DE, export_licences: [3A090.a]}}
compliance:
  rules:
{rules}
"""
    path = tmp / "bench-policy.yaml"
    path.write_text(text.replace(f"{ROOT}/configs/", "../" * 0 + f"{ROOT}/configs/"), encoding="utf-8")
    return path


def make_offers(policy: Policy, n: int, rng: random.Random) -> list[Offer]:
    from broker.policy.offers import static_offers

    base = static_offers(policy)
    out: list[Offer] = []
    i = 0
    while len(out) < n:
        o = base[i % len(base)]
        copy = i // len(base)
        out.append(
            o
            if copy == 0
            else o.model_copy(
                update={
                    "zone": f"{o.zone}-{copy}",
                    "price_per_hour": round(o.price_per_hour * rng.uniform(0.8, 1.2), 4),
                    "expected_wait_s": rng.choice([0.0, 60.0, 600.0]),
                }
            )
        )
        i += 1
    return out


JOBS = [
    {
        "name": "train",
        "command": ["python", "train.py"],
        "runtime_estimate": "6h",
        "resources": {"accelerators": {"count": 8, "any_of": ["H100", "A100", "H200", "L40S"]}},
    },
    {
        "name": "infer",
        "command": ["serve"],
        "runtime_estimate": "1h",
        "spot": "never",
        "resources": {"accelerators": {"count": 1}},
    },
    {
        "name": "sweep",
        "command": ["sweep"],
        "runtime_estimate": "30m",
        "priority": "high",
        "resources": {"accelerators": {"count": 4, "min_memory_gb": 40}},
    },
    {
        "name": "tiny",
        "command": ["x"],
        "runtime_estimate": "2h",
        "priority": "low",
        "resources": {"accelerators": {"count": 1, "any_of": ["L4", "A10G"]}},
    },
]


MODES = ("cold", "cold_regroup", "warm_rules", "repeated")


def measure(
    policy: Policy, offers: list[Offer], decisions: int, *, mode: str, seed: int, how: str
) -> dict[str, object]:
    rng = random.Random(seed)
    jobs = [JobSpec.model_validate(j) for j in JOBS]
    tenants = [TenantId(t.id) for t in policy.tenants]
    ctx = PlacementContext()
    policy.rules.clear()
    forget_snapshots()
    given: Sequence[Offer] = prepare_offers(offers, policy) if how == "prepared" else offers
    for job in jobs:  # warm-up: imports, caches of the policy object
        for t in tenants:
            place(job, t, given, policy, ctx)
    times = []
    cpu = []
    collections = [0, 0, 0]
    shapes: list[str] = []
    collected: list[bool] = []  # a collection started inside the decision

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections[info["generation"]] += 1

    gc.callbacks.append(count)
    sampled: list[tuple[JobSpec, TenantId, object]] = []
    for i in range(decisions):
        job, tenant = rng.choice(jobs), rng.choice(tenants)
        if mode != "repeated":  # a new job: the scored-decision memo cannot answer it
            job = job.model_copy(update={"runtime_estimate": timedelta(seconds=rng.randint(600, 86400))})
        if how == "fresh":
            given = list(offers)
        forget(policy, given, mode=mode, how=how)
        seen = sum(collections)
        c0 = time.process_time()
        t0 = time.perf_counter()
        expl = place(job, tenant, given, policy, ctx)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if i % CHECK_EVERY == 0:
            sampled.append((job, tenant, _verdicts(expl)))
        collected.append(sum(collections) > seen)
        shapes.append(f"{job.name}/{tenant}")
    gc.callbacks.remove(count)  # (a collection between decisions is counted too: it is their garbage)
    return {
        "checked_against_plain_cel": len(sampled),
        "differing_from_plain_cel": _differing(policy, offers, sampled),
        "p50_ms": _ms(times, 0.5),
        "p99_ms": _ms(times, 0.99),
        "cpu_p50_ms": _ms(cpu, 0.5),
        "cpu_p99_ms": _ms(cpu, 0.99),
        "decisions_per_s": round(len(times) / sum(times), 1),
        "gc_collections": {str(g): n for g, n in enumerate(collections)},
        "tail": _tail(times, cpu, shapes, collected),
    }


def forget(policy: Policy, given: Sequence[Offer], *, mode: str, how: str) -> None:
    """Drop what `mode` does not keep before a decision (see the module doc)."""
    if mode == "repeated":
        return
    if mode != "warm_rules":
        policy.rules.clear()
        policy.rules.classes.clear()  # (`clear()` keeps them: compiled with the rules, yet read from them)
    if mode == "cold_regroup" or how == "fresh":
        forget_snapshots()  # `place()` prepares the offers again
        return
    snap = snapshot(given, policy)
    snap.clear()  # the catalog's snapshot, its job memos dropped
    if mode == "cold":
        snap.forget_parts()


CHECK_EVERY = 50
"""Every this many decisions, one is decided again on the plain CEL path after the timing
(`RuleSet.fast = False`: no memo, no native predicate) and the two are compared."""


def _verdicts(expl: Explanation) -> tuple[object, ...]:
    """What a decision decided: the offer chosen and each offer's verdict with its rules."""
    chosen = expl.chosen.offer.key if expl.chosen else None
    each = tuple((s.offer.key, s.allowed, tuple(sorted({r.rule for r in s.reasons}))) for s in expl.offers)
    return chosen, each


def _differing(
    policy: Policy, offers: list[Offer], sampled: list[tuple[JobSpec, TenantId, object]]
) -> int:
    """How many sampled decisions the plain CEL path decides otherwise (the fast path's memos,
    native predicates and classes must not change a verdict)."""
    policy.rules.fast = False
    try:
        differing = 0
        for job, tenant, seen in sampled:
            policy.rules.clear()
            forget_snapshots()
            differing += _verdicts(place(job, tenant, list(offers), policy, PlacementContext())) != seen
        return differing
    finally:
        policy.rules.fast = True
        policy.rules.clear()
        forget_snapshots()


def _tail(
    times: list[float], cpu: list[float], shapes: list[str], collected: list[bool]
) -> dict[str, object]:
    """What the slowest 1% (wall) are: their shapes, how many ran a garbage collection, and
    each shape's CPU p50 / p99 over the whole run (`job/tenant`)."""
    slow = sorted(range(len(times)), key=times.__getitem__)[int(len(times) * 0.99) :]
    by_shape: dict[str, list[float]] = {}
    for name, c in zip(shapes, cpu, strict=True):
        by_shape.setdefault(name, []).append(c)
    return {
        "decisions": len(slow),
        "with_gc": sum(collected[i] for i in slow),
        "shapes": dict(Counter(shapes[i] for i in slow).most_common()),
        "shape_cpu_p50_p99_ms": {name: [_ms(v, 0.5), _ms(v, 0.99)] for name, v in sorted(by_shape.items())},
    }


def _ms(samples: list[float], q: float) -> float:
    """The q-quantile of `samples` (seconds) in milliseconds (wall: perf_counter; CPU: process_time)."""
    ordered = sorted(samples)
    value = statistics.median(ordered) if q == 0.5 else ordered[min(len(ordered) - 1, int(len(ordered) * q))]
    return round(value * 1e3, 3)


def offer_sizes(text: str) -> list[int]:
    """`452,1000`: each size a number of offers, at least 1 (0 would measure no placement)."""
    sizes = []
    for part in text.split(","):
        try:
            n = int(part.strip())
        except ValueError:
            why = f"{part.strip()!r} is not a number of offers (e.g. 452,1000)"
            raise argparse.ArgumentTypeError(why) from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{n} offers: each size must be >= 1")
        sizes.append(n)
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--sizes",
        type=offer_sizes,
        default="452,1000,10000",
        help="452 and 1,000: the sizes of the SkyPilot comparison in issue 15",
    )
    ap.add_argument("--decisions", type=whole_number(1), default=2000)  # (the quantiles of none: undefined)
    ap.add_argument("--offers", choices=("same", "prepared", "fresh"), default="same", help="see above")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(write_policy(Path(tmp)))
    gc.freeze()  # what a long-running server does after start-up: loaded data leaves GC scans
    rng = random.Random(args.seed)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        ap.error(f"--modes: unknown {', '.join(unknown)} (known: {', '.join(MODES)})")
    results, differing = [], 0
    load_before = os.getloadavg()
    for n in args.sizes:
        offers = make_offers(policy, n, rng)
        decisions = max(50, args.decisions * 1000 // max(n, 1000)) if n > 1000 else args.decisions
        row: dict[str, object] = {"offers": len(offers), "rules": len(policy.rules)}
        for mode in modes:
            got = row[mode] = measure(policy, offers, decisions, mode=mode, seed=args.seed, how=args.offers)
            differs = got["differing_from_plain_cel"]
            assert isinstance(differs, int)
            differing += differs
        results.append(row)
    if differing:
        print(f"placement: {differing} sampled decision(s) differ from the plain CEL path", file=sys.stderr)
    if args.json:
        load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
        machine = {"cpus": os.cpu_count(), "load_average_1_5_15m": load}
        out = {"headline": "cold", "offers": args.offers, "machine": machine, "results": results}
        print(json.dumps(out, indent=2))
    else:
        for r in results:
            for mode in modes:
                m = r[mode]
                assert isinstance(m, dict)
                tail = m["tail"]
                assert isinstance(tail, dict)
                print(
                    f"{r['offers']:>6} offers x {r['rules']} rules, {mode:>10}: p50 {m['p50_ms']:.3f} ms, "
                    f"p99 {m['p99_ms']:.3f} ms (CPU {m['cpu_p50_ms']:.3f} / {m['cpu_p99_ms']:.3f} ms), "
                    f"{m['decisions_per_s']:,.0f} decisions/s; slowest 1%: {tail['with_gc']} of "
                    f"{tail['decisions']} with a GC, {tail['shapes']}"
                )
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
