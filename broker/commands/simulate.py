"""`szb simulate`: replay a workload trace against a policy, with baselines and a lower bound."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from broker.commands._args import UsageError, whole_number
from broker.policy import PolicyError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="replay a trace: cost and wait of a policy against baselines")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--trace", type=Path,
        help="trace file (Alibaba GPU v2023 pod list, Alibaba v2026 spot job list or plain CSV; .gz ok)",
    )
    src.add_argument(
        "--synthetic", type=whole_number(1), metavar="N", help="generate N LLM-heavy jobs instead"
    )
    p.add_argument(
        "--trace-format",
        choices=("alibaba-v2023", "alibaba-spot-v2026", "csv"),
        default=None,
        help="default: detected from the header",
    )
    p.add_argument("--policy", type=Path, required=True)
    p.add_argument("--scenario", type=Path, default=None, help="scenario YAML (configs/scenarios/)")
    p.add_argument(
        "--onprem-gpus",
        type=int,
        default=None,
        help="rescale on-prem GPU partitions to N GPUs (each keeps one node at least: see onprem_gpus)",
    )
    p.add_argument("--time-scale", type=float, default=None, help="divide inter-arrival times by K")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--jobs",
        type=whole_number(1),
        default=None,
        metavar="N",
        help="replay only the first N jobs (in arrival order) for a quick look",
    )
    p.add_argument(
        "--baselines",
        type=baseline_names,
        default=(),
        metavar="all|none|NAME[,NAME...]",
        help="baselines to run beside the policy: onprem-only, cloud-cheapest, cheapest-offer (default none)",
    )
    p.add_argument(
        "--no-lower-bound",
        action="store_true",
        help="skip the references: the LP relaxation and the offline schedule",
    )
    p.add_argument(
        "--per-strategy-bounds",
        action="store_true",
        help="also solve the bound at each strategy's own late-job count (slower)",
    )
    p.add_argument("--report", type=Path, default=None, help="write summary.md and PNG plots here")
    p.add_argument("--output", "-o", choices=("json", "table"), default="table")
    p.set_defaults(handler=cmd_simulate)


def baseline_names(text: str) -> tuple[str, ...]:
    """`all`, `none`, or some of the baselines by name (comma-separated), in their usual order."""
    from broker.sim.baselines import BASELINES

    if text.strip() in ("all", "none"):
        return BASELINES if text.strip() == "all" else ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown and unknown[0] in ("all", "none"):  # (a word of its own, not one of a list)
        raise argparse.ArgumentTypeError(
            f"{unknown[0]!r} stands alone: give all, none, or a list of {', '.join(BASELINES)}"
        )
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{(unknown or [text])[0]!r} is not a baseline (all, none, or some of {', '.join(BASELINES)})"
        )
    return tuple(b for b in BASELINES if b in names)


def cmd_simulate(args: argparse.Namespace) -> int:
    from broker.sim.collector import fewer_collections

    # From the start, not only around each run: the start-up's imports and loading (the trace,
    # the policy, the jobs) made ~200 collections that freed ~1k objects, ~0.1 s of CPU on the
    # one core the start-up holds before the side work can fork.
    with fewer_collections():
        loaded = _load(args)
        if isinstance(loaded, int):
            return loaded
        policy, scenario, jobs, source = loaded
        sim = _run(args, policy, scenario, jobs)
    result = {
        **sim.result,
        "scenario": scenario.name,
        "seed": scenario.seed,
        "time_scale": scenario.time_scale,
        "policy": str(args.policy),
        "policy_hash": policy.hash,
        "currency": policy.currency,
        **source,
    }
    for key in (
        "offline_cost",
        "offline_ratio",
        "lower_bound_s",
        "offline_s",
    ):  # the same keys with the references skipped
        result.setdefault(key, None)
    failed = _write_report(args, result, sim.runs)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        from broker.commands.simulate_table import print_table

        print_table(result)
    if failed is not None:  # after the result: a whole run's figures are not lost to a full disk
        sys.stdout.flush()
        print(f"szb: error: --report {args.report}: {failed}", file=sys.stderr)
        return 1
    return 0


def _write_report(args: argparse.Namespace, result: dict[str, Any], runs: Any) -> str | None:
    """Write the `--report` folder (noting it in `result`); why it failed, or None."""
    if args.report is None:
        return None
    from broker.sim.report import write_report

    try:
        write_report(args.report, result, runs)
    except OSError as exc:  # checked before the run, but the disk or the folder may change since
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    result["report"] = str(args.report)
    return None


def _load(args: argparse.Namespace) -> tuple[Any, Any, list[Any], dict[str, Any]] | int:
    """(policy, scenario, jobs, source facts), or the exit code after a clear error."""
    from broker.policy import load_policy
    from broker.sim.jobs import MAX_RUNTIME_S, build_jobs
    from broker.sim.report import ensure_report_dir
    from broker.sim.scenario import ScenarioError, load_scenario
    from broker.sim.traces import TraceError

    try:
        if args.report is not None:  # before the run, not after it
            ensure_report_dir(args.report)
        if args.synthetic is not None and args.trace_format is not None:
            raise ValueError("--trace-format: only with --trace (a synthetic workload has no file to read)")
        if args.per_strategy_bounds and args.no_lower_bound:
            raise ValueError("--per-strategy-bounds: there is no bound to solve with --no-lower-bound")
        if not args.no_lower_bound:
            from broker.sim.extras import check_solver

            check_solver()
        policy = load_policy(args.policy)
        sites, tenants = [str(site.id) for site in policy.sites], [str(t.id) for t in policy.tenants]
        scenario = load_scenario(args.scenario, sites=sites, tenants=tenants)
        scenario = _flagged(args, scenario)
        trace, source = _trace(args, scenario)
        source["onprem_gpus"] = _onprem_gpus(args, policy, scenario)
        if args.trace is not None:
            from broker.sim.trace_check import vet_trace

            vet_trace(trace, policy, args.trace, source["format"], ignore_pool=scenario.gpu_spec == "ignore")
        if args.jobs is not None:
            trace = _sample(args.jobs, trace, source)
        if any_model := Counter(tj.undisclosed for tj in trace if tj.undisclosed):  # (of the jobs replayed)
            source["any_accelerator"] = dict(sorted(any_model.items()))
        jobs = build_jobs(trace, policy, scenario)
        # (cut so that its estimate validates; said, or the figures read as the trace's own)
        source["runtime_capped"] = sum(1 for tj in trace if tj.runtime_s > MAX_RUNTIME_S)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (ScenarioError, TraceError, OSError, ValueError) as exc:
        print(f"szb: error: {exc}", file=sys.stderr)
        return 1
    if not jobs:
        which = f"{args.trace}: the trace" if args.trace is not None else "the workload"
        print(f"szb: error: {which} has no jobs to replay{_skipped(source)}", file=sys.stderr)
        return 1
    return policy, scenario, jobs, source


def _flagged(args: argparse.Namespace, scenario: Any) -> Any:
    """The scenario with --time-scale, --onprem-gpus and --seed, checked as the file is; a value
    it refuses is a usage error naming the flag (exit 2)."""
    from broker.sim.scenario import ScenarioError, with_flags

    flags = ("time_scale", "onprem_gpus", "seed")
    update = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    try:
        return with_flags(scenario, update)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from exc


def _onprem_gpus(args: argparse.Namespace, policy: Any, scenario: Any) -> int:
    """The on-prem GPUs simulated, said when they are not the size asked for."""
    from broker.sim.backends import onprem_partitions

    parts = onprem_partitions(policy, scenario.onprem_gpus).values()
    gpus = sum(p.total for p in parts if p.accelerated)
    asked = scenario.onprem_gpus
    if asked is not None and asked != gpus:  # (rescaled partitions keep a whole node at least)
        where = "--onprem-gpus" if args.onprem_gpus is not None else f"{args.scenario}: onprem_gpus:"
        said = f"each GPU partition keeps at least one node: {gpus} GPUs"
        if not any(p.accelerated for p in parts):
            said = "the policy has no on-prem GPU partition to scale: 0 GPUs"
        print(f"szb: {where} {asked}: {said}", file=sys.stderr)
    return gpus


def _skipped(source: dict[str, Any]) -> str:
    """Why a trace with rows left no job: `: 3 rows skipped (never scheduled ...: 3)`."""
    skipped = source.get("skipped") or {}
    if not skipped:
        return ""
    why = "; ".join(f"{reason}: {n}" for reason, n in skipped.items())
    return f": {sum(skipped.values())} rows skipped ({why})"


def _sample(n: int, trace: list[Any], source: dict[str, Any]) -> list[Any]:
    """The first n jobs in arrival order; a sample is recorded as one only when it leaves jobs out."""
    if n >= len(trace):  # the whole workload: its figures are not a sample's
        if n > len(trace):
            whole = f"the workload has {len(trace)} jobs; replaying all of them"
            print(f"szb: --jobs {n}: {whole}", file=sys.stderr)
        return trace
    source["jobs_sampled"], source["sample_of"] = n, len(trace)
    return trace[:n]


def _trace(args: argparse.Namespace, scenario: Any) -> tuple[list[Any], dict[str, Any]]:
    from broker.sim.synthetic import SyntheticParams, generate
    from broker.sim.traces import read_trace

    if args.trace is None:
        return generate(SyntheticParams(jobs=args.synthetic), scenario.seed), {"synthetic": args.synthetic}
    trace, info = read_trace(args.trace, args.trace_format, max_runtime_s=scenario.max_runtime_s)
    source = {"trace": str(args.trace), "format": info.format, "rows": info.rows, "kept": info.kept}
    source["skipped"] = info.skipped
    return trace, source


def _run(args: argparse.Namespace, policy: Any, scenario: Any, jobs: list[Any]) -> Any:
    """The simulation, with a progress bar on stderr."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from broker.sim.run import simulate

    console = _stderr_console()
    # Not to a terminal, the bar shows nothing (it is transient) but its thread still built it ten
    # times a second, ~1% of the policy run's CPU: it is left out there.
    with Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        return simulate(
            policy,
            jobs,
            scenario,
            baselines=args.baselines,
            lower_bound=not args.no_lower_bound,
            per_strategy_bounds=args.per_strategy_bounds,
            progress=progress,
        )


def _stderr_console() -> Any:
    from broker.commands._console import Console

    return Console(stderr=True)
