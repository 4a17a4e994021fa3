"""`szb explain JOB.yaml`: offline dry-run placement from the policy's static catalog."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from broker.api import broker_service_pb2 as pb
from broker.burst import BurstInputs, decide, explain_json
from broker.commands._connect import add_connection_args, client_for
from broker.jobfile import JobFileError, load_job_file
from broker.model import JobSpec, TenantId
from broker.placement import Explanation
from broker.policy import PolicyError, load_policy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("explain", help="where would this job run, and why (offline)")
    parser.add_argument("job", type=Path, help="job spec YAML")
    parser.add_argument("--policy", type=Path, default=Path("configs/policy.yaml"))
    parser.add_argument("--tenant", default=None, help="tenant id (default: the policy's first tenant)")
    parser.add_argument("--output", choices=("json", "table"), default="table")
    parser.add_argument("--limit", type=int, default=25, help="table rows (json always has all offers)")
    add_connection_args(parser, server_default=None)
    parser.set_defaults(handler=cmd_explain)


def load_job(path: Path) -> JobSpec:
    """A JobSpec from YAML; raises PolicyError with FILE:LINE:COL problems."""
    try:
        return load_job_file(path)
    except JobFileError as exc:
        raise PolicyError(exc.problems) from exc


def cmd_explain(args: argparse.Namespace) -> int:
    from broker.catalog.offers import static_offers

    if args.server:
        return _explain_remote(args)
    try:
        policy = load_policy(args.policy)
        job = load_job(args.job)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    tenant = args.tenant or (policy.tenants[0].id if policy.tenants else "")
    now = datetime.now(UTC)  # the shell reads the clock; the core only receives it
    decision = decide(job, TenantId(tenant), static_offers(policy, read_at=now), policy,
                      BurstInputs(now=now, queued_since=now))
    explanation: Explanation = decision.explanation
    if args.output == "json":
        print(json.dumps(explain_json(decision), indent=2))
    else:
        print_table(explanation, tenant=tenant, job=job.name, limit=args.limit)
        print_decision(explain_json(decision)["decision"])
    return 0 if explanation.chosen is not None else 1


def _explain_remote(args: argparse.Namespace) -> int:
    """ExplainPlacement on a running broker: the same decision with live waits and blocks."""
    from google.protobuf.json_format import MessageToDict

    from broker.client import ClientError
    from broker.serde import spec_to_proto

    try:
        job = load_job(args.job)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    with client_for(args) as client:
        try:
            resp = client.explain(pb.ExplainPlacementRequest(job=spec_to_proto(job)))
        except ClientError as exc:
            print(f"szb: error: {exc}", file=sys.stderr)
            return 1
    ex = resp.explanation
    body = MessageToDict(ex, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    body.pop("decision_json", None)
    body["chosen"] = body.get("chosen") if ex.HasField("chosen") else None
    body["decision"] = json.loads(ex.decision_json or "{}")
    if args.output == "json":
        print(json.dumps(body, indent=2))
    else:
        from rich.console import Console

        console = Console()
        chosen = body["chosen"]
        console.print(f"chosen: {chosen['site']} {chosen['instance_type']}" if chosen else "chosen: none")
        for o in body.get("offers", [])[: args.limit]:
            why = "; ".join(r["message"] for r in o.get("reasons", [])) or "allowed"
            console.print(f"  {o['site']:<22} {o['instance_type']:<24} {o.get('price_per_hour', 0):>9.2f} "
                          f"wait {o.get('expected_wait_seconds', 0) / 60:>5.0f}m  {why}", highlight=False)
        print_decision(body["decision"])
    return 0 if ex.HasField("chosen") else 1


def print_decision(decision: dict[str, object]) -> None:
    """The run / wait / burst decision and the numbers behind it."""
    from rich.console import Console

    console = Console()
    console.print(f"[bold]decision:[/] {decision.get('action')}"
                  + (" (burst)" if decision.get("burst") else ""))
    reasons = decision.get("reasons") or []
    for reason in reasons if isinstance(reasons, list) else []:
        console.print(f"  - {reason}", highlight=False)
    numbers = {k: v for k, v in decision.items() if k not in ("action", "burst", "reasons")}
    if numbers:
        console.print("  " + ", ".join(f"{k}={v}" for k, v in numbers.items()), highlight=False)


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
