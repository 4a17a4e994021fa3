"""`szb explain JOB.yaml`: offline dry-run placement from the policy's static catalog."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from broker.model import JobSpec, TenantId
from broker.placement import Explanation, PlacementContext, place
from broker.policy import PolicyError, load_policy
from broker.policy._yaml import parse_yaml, validation_problems


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("explain", help="where would this job run, and why (offline)")
    parser.add_argument("job", type=Path, help="job spec YAML")
    parser.add_argument("--policy", type=Path, default=Path("configs/policy.yaml"))
    parser.add_argument("--tenant", default=None, help="tenant id (default: the policy's first tenant)")
    parser.add_argument("--output", choices=("json", "table"), default="table")
    parser.add_argument("--limit", type=int, default=25, help="table rows (json always has all offers)")
    parser.set_defaults(handler=cmd_explain)


def load_job(path: Path) -> JobSpec:
    """A JobSpec from YAML; raises PolicyError with FILE:LINE:COL problems."""
    from broker.policy import Problem

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(str(path), 1, 1, f"cannot read job: {exc.strerror}")]) from exc
    doc = parse_yaml(text, str(path))
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, doc, str(path))) from exc


def cmd_explain(args: argparse.Namespace) -> int:
    from broker.catalog.offers import static_offers

    try:
        policy = load_policy(args.policy)
        job = load_job(args.job)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    tenant = args.tenant or (policy.tenants[0].id if policy.tenants else "")
    now = datetime.now(UTC)  # the shell reads the clock; the core only receives it
    explanation = place(
        job, TenantId(tenant), static_offers(policy, read_at=now), policy, PlacementContext(now=now)
    )
    if args.output == "json":
        print(json.dumps(explanation.to_json(), indent=2))
    else:
        print_table(explanation, tenant=tenant, job=job.name, limit=args.limit)
    return 0 if explanation.chosen is not None else 1


def print_table(ex: Explanation, *, tenant: str, job: str, limit: int) -> None:
    """A SkyPilot-style optimizer plan: chosen row marked, why each other offer lost."""
    from rich.console import Console
    from rich.table import Table

    best = ex.chosen.score if ex.chosen is not None else 0.0
    table = Table(
        title=f"Placement of {job} for {tenant} (policy {ex.policy_hash[:12]}, score in "
        f"{ex.currency}, lower wins)"
    )
    for col in ("", "SITE", "INSTANCE", "ACCELERATORS", "SPOT", "PRICE/H", "WAIT", "SCORE", "VERDICT"):
        table.add_column(
            col, justify="right" if col in ("PRICE/H", "WAIT", "SCORE") else "left", no_wrap=col != "VERDICT"
        )
    for i, s in enumerate(ex.offers[:limit]):
        o = s.offer
        acc = f"{o.accelerator}x{o.count}" if o.accelerator else "-"
        mark = "✔" if i == 0 and ex.chosen is not None else ""
        if not s.allowed:
            verdict = "; ".join(f"[{r.rule}] {r.message}" for r in s.reasons)
            score = "-"
        else:
            verdict = "chosen" if mark else f"allowed: +{s.score - best:,.2f} {ex.currency} vs chosen"
            score = f"{s.score:,.2f}"
        table.add_row(
            mark,
            o.site,
            o.instance_type,
            acc,
            "yes" if o.spot else "no",
            f"{o.price_per_hour:,.2f} {o.currency}",
            f"{o.expected_wait_s / 60:.0f}m",
            score,
            verdict,
            style="bold green" if mark else ("dim" if not s.allowed else None),
        )
    console = Console() if sys.stdout.isatty() else Console(width=220)
    console.print(table)
    hidden = len(ex.offers) - min(limit, len(ex.offers))
    if hidden:
        console.print(f"... {hidden} more offers (use --limit or --output json)")
    if ex.chosen is None:
        console.print("[bold red]No offer is allowed for this job.[/]")
