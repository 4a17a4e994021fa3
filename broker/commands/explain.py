"""`szb explain JOB.yaml`: where would this job run, and why (offline, or live with `--server`).

Both modes print the same shape: the decision's own offer marked first, a `-better-analyze`
style count of what rejected the other offers (the rule that blocks the job first), every
price with its currency.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from broker.api import broker_service_pb2 as pb
from broker.burst import BurstInputs, decide
from broker.burst.money import tenant_money
from broker.burst.projection import minutes
from broker.client import ClientError
from broker.commands._args import table_rows
from broker.commands._connect import add_connection_args, client_for
from broker.commands._console import Console
from broker.fairshare import priority_refusal
from broker.jobfile import JobFileError, load_job_file
from broker.model import JobSpec, TenantId
from broker.offline_images import static_no_images
from broker.placement.names import unknown_accelerators
from broker.policy import Policy, PolicyError, load_policy
from broker.policy.offers import static_offers
from broker.quota_bar import as_submitted
from broker.serde import explanation_from_proto, spec_to_proto
from broker.serde_decision import explain_json, spot_outlook_text
from broker.validation import did_you_mean

DEFAULT_POLICY = Path("configs/policy.yaml")
MONEY_KEYS = ("onprem_total_cost", "cloud_total_cost", "cash", "voucher")


QUEUED_ID = re.compile(r"j-[0-9a-f]{1,60}")
"""A job id as the broker hands them out (a spec file of that name, if one exists, is read instead)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("explain", help="where would this job run, and why")
    parser.add_argument(
        "job", type=Path,
        help="job spec YAML, or with --server the id of a queued job (explained where it stands)",
    )
    parser.add_argument("--policy", type=Path, default=None,
                        help=f"offline: the routing policy (default {DEFAULT_POLICY})")
    parser.add_argument("--tenant", default=None,
                        help="tenant id (offline default: the policy's first tenant; with --server: "
                        "the token's tenant, and only operators may name another)")
    parser.add_argument("--output", "-o", choices=("json", "table"), default="table")
    parser.add_argument("--limit", type=table_rows, default=25,
                        help="table rows (json always has all offers)")
    # --server (or SZB_SERVER) asks a running broker instead: live capacity, waits, blocks, money.
    add_connection_args(parser, server_default=None)
    parser.set_defaults(handler=cmd_explain)


def load_job(path: Path) -> JobSpec:
    """A JobSpec from YAML; raises PolicyError with FILE:LINE:COL problems."""
    try:
        return load_job_file(path)
    except JobFileError as exc:
        raise PolicyError(exc.problems) from exc


def cmd_explain(args: argparse.Namespace) -> int:
    server = args.server
    if server and args.policy is not None:
        print(
            "szb: usage error: --server (or SZB_SERVER) asks the running broker, under its policy; "
            "--policy is for an offline explain: give one or the other",
            file=sys.stderr,
        )
        return 2
    if QUEUED_ID.fullmatch(str(args.job)) and not args.job.exists():
        if not server or args.tenant:
            print(f"szb: usage error: {args.job} is a job id: explaining a queued job asks the running "
                  "broker (--server or SZB_SERVER), for the job's own tenant (no --tenant)", file=sys.stderr)
            return 2
        return _explain_queued(args)
    if server:
        return _explain_remote(args)
    try:
        policy = load_policy(args.policy or DEFAULT_POLICY)
        job = load_job(args.job)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    tenant = args.tenant or (policy.tenants[0].id if policy.tenants else "")
    if (refused := _not_admitted(policy, tenant, job)) is not None:  # (as submission refuses it)
        print(f"szb: error: {refused}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)  # the shell reads the clock; the core only receives it
    offers = static_offers(policy, read_at=now)
    if unknown := unknown_accelerators(job, policy, offers):  # (as submission refuses them)
        for violation in unknown:
            print(f"{args.job}: error: {violation}", file=sys.stderr)
        return 1
    # Nothing spent is known offline: the month's whole budget and cap, every voucher's balance
    # (but one past its expiry day, which pays nothing), as live in a month with nothing spent.
    money = tenant_money(policy, tenant, (), now=now)
    inputs = BurstInputs(now=now, queued_since=now, money=money, no_images=static_no_images(policy))
    decision = as_submitted(decide(job, TenantId(tenant), offers, policy, inputs), job, policy, tenant)
    body = explain_json(decision, job, policy)
    body["tenant"] = tenant
    return _show(body, args, job=job.name, nodes=job.resources.nodes, count=job.resources.accelerators.count)


def _not_admitted(policy: Policy, tenant: str, job: JobSpec) -> str | None:
    """Why a submission would be refused before any placement: a tenant the policy does not
    declare, or a priority the tenant is not granted (INVALID_ARGUMENT live); None otherwise."""
    if policy.tenant(tenant) is None:
        known = [t.id for t in policy.tenants]
        hint = did_you_mean(tenant, known)
        return f"--tenant {tenant}: not in the policy{hint} (its tenants: {', '.join(known)})"
    why = priority_refusal(policy, tenant, job.priority)
    return None if why is None else f"priority: {why} (submitted, it is refused with INVALID_ARGUMENT)"


def _explain_remote(args: argparse.Namespace) -> int:
    """ExplainPlacement on a running broker: the decision its dispatcher would take now."""
    try:
        job = load_job(args.job)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    with client_for(args) as client:
        try:
            asked = pb.ExplainPlacementRequest(job=spec_to_proto(job), tenant=args.tenant or "")
            resp = client.explain(asked)
        except ClientError as exc:
            print(f"szb: error: {exc}", file=sys.stderr)
            return 1
    return _show(explanation_from_proto(resp.explanation), args, job=job.name, nodes=job.resources.nodes,
                 count=job.resources.accelerators.count)


def _explain_queued(args: argparse.Namespace) -> int:
    """ExplainPlacement of a queued job: its own spec, tenant, arrival and place in the queue."""
    with client_for(args) as client:
        try:
            stored = client.get(str(args.job)).job
            resp = client.explain(pb.ExplainPlacementRequest(job_id=stored.id))
        except ClientError as exc:
            print(f"szb: error: {exc}", file=sys.stderr)
            return 1
    spec = stored.spec
    return _show(explanation_from_proto(resp.explanation), args, job=f"{spec.name} ({stored.id})",
                 nodes=spec.resources.nodes or 1, count=spec.resources.accelerators.count)


def _show(body: dict[str, Any], args: argparse.Namespace, *, job: str, nodes: int = 1, count: int = 0) -> int:
    if nodes > 1:
        body["nodes"] = nodes
    if args.output == "json":
        print(json.dumps(body, indent=2))
    else:
        console = Console() if sys.stdout.isatty() else Console(width=220)
        print_table(body, job=job, limit=args.limit, console=console, count=count)
        print_decision(body["decision"], console=console)
    return 0 if body.get("allowed_offers") else 1


def summary_line(body: dict[str, Any]) -> str:
    """`0 of 219 offers allowed: 187 hardware.fit, 12 us-export-3a090`: what rejected the rest."""
    counts = ", ".join(f"{r['offers']} {r['rule']}" for r in body.get("rejections", []))
    head = f"{body.get('allowed_offers', 0)} of {len(body.get('offers', []))} offers allowed"
    return f"{head}: {counts}" if counts else head


def _refused_by(body: dict[str, Any]) -> str | None:
    """`[rule] message` of what refuses the job first: the refused decision's first reason (the
    rule closing the offers the job fits, else its nearest misfit: `refusal_summary`), not the
    commonest non-hardware rule, which may close only offers the job does not fit anyway."""
    decision = body.get("decision", {})
    reasons = decision.get("reasons") or []
    if decision.get("action") == "reject" and reasons and ": " in reasons[0]:
        rule, message = reasons[0].split(": ", 1)
        return f"[{rule}] {message}"
    blocking = [r for r in body.get("rejections", []) if not r["rule"].startswith("hardware.")]
    return f"[{blocking[0]['rule']}] {blocking[0]['message']}" if blocking else None


def _price(value: float, currency: str) -> str:
    return f"{value:,.2f} {currency}".rstrip()


def print_table(body: dict[str, Any], *, job: str, limit: int, console: Console, count: int = 0) -> None:
    """The decision's offer marked first, then allowed offers, then why the others lost; a
    partition's offers at the job's accelerator `count` only (`at_the_jobs_count`)."""
    decision = body.get("decision", {})
    currency = body.get("score_currency") or decision.get("currency", "")
    chosen = body.get("chosen")
    best = chosen["score"] if chosen and chosen.get("score") is not None else None
    who = f" for {body['tenant']}" if body.get("tenant") else ""
    console.print(escape(f"Placement of {job}{who} (policy {body.get('policy_hash', '')[:12]})"),
                  highlight=False)
    if (nodes := int(body.get("nodes") or 1)) > 1:
        # The table's prices and accelerators are per node; the gang pays for all of them.
        console.print(f"A {nodes}-node gang, all-or-nothing on one site: PRICE/H and ACCELERATORS are "
                      f"per node, SCORE prices all {nodes} nodes", highlight=False)
    console.print(escape(summary_line(body)), highlight=False)
    if not body.get("allowed_offers") and (top := _refused_by(body)) is not None:
        console.print(f"[bold red]blocked by[/] {escape(top)}", highlight=False)
    # Placement's score prices a spot run as never interrupted; the decision's reasons and its
    # spot outlook price the interruptions. A header saying "expected cost" misled (stop 45).
    table = Table(title=f"Offers (score in {currency}: price × runtime plus the policy's terms, lower "
                        "wins; spot as if never interrupted: the decision below prices that)")
    for col in ("", "SITE", "INSTANCE", "ACCELERATORS", "SPOT", "PRICE/H", "WAIT", f"SCORE ({currency})",
                "VERDICT"):
        table.add_column(col, justify="right" if col in ("PRICE/H", "WAIT") or col.startswith("SCORE")
                         else "left", no_wrap=col != "VERDICT")
    offers, other_counts = at_the_jobs_count(body.get("offers", []), count, chosen is not None)
    weighed = decision.get("onprem_partition") if decision.get("onprem_expected_wait_s") is not None else None
    for i, o in enumerate(offers[:limit]):
        mark = "✔" if i == 0 and chosen is not None else ""
        verdict, score = _verdict(o, bool(mark), decision, best, currency)
        acc = f"{o['accelerator']}x{o['count']}" if o.get("accelerator") else "-"
        wait = "?" if o.get("capacity_unknown") else minutes(_wait_shown(o, decision, weighed), "m")
        site = f"{o['site']}/{o['zone']}" if o.get("zone") else o["site"]  # two zones: two rows
        table.add_row(
            mark, escape(site), escape(o["instance_type"]), escape(acc), "yes" if o["spot"] else "no",
            _price(o["price_per_hour"], o.get("currency") or ""), wait, score, escape(verdict),
            style="bold green" if mark else ("dim" if not o["allowed"] else None),
        )
    console.print(table)
    hidden = len(offers) - min(limit, len(offers))
    if hidden:
        console.print(f"... {hidden} more offers (use --limit or --output json)")
    if other_counts:
        console.print(f"{other_counts} on-prem offers of other accelerator counts are not shown "
                      "(--output json has them)")
    if not body.get("allowed_offers"):
        console.print("[bold red]No offer is allowed for this job.[/]")


def _verdict(o: dict[str, Any], chosen: bool, decision: dict[str, Any], best: float | None,
             currency: str) -> tuple[str, str]:
    """An offer row's VERDICT and SCORE cells."""
    if not o["allowed"]:
        return "; ".join(f"[{r['rule']}] {r['message']}" for r in o["reasons"]), "-"
    score = f"{o['score']:,.2f}" if o.get("score") is not None else "-"
    if chosen:
        action = decision.get("action", "")
        verdict = {"run": "decision: run here", "wait": "decision: wait for this"}.get(
            action, f"decision: {action}")
        return verdict + (" (burst)" if decision.get("burst") else ""), score
    if o.get("passed_over"):
        return f"passed over: {o['passed_over']}", score
    if best is not None and o.get("score") is not None:
        return f"allowed: {o['score'] - best:+,.2f} {currency} vs the decision's offer", score
    return "allowed", score


def at_the_jobs_count(
    offers: list[dict[str, Any]], count: int, chosen_first: bool
) -> tuple[list[dict[str, Any]], int]:
    """`offers` less the rows of a partition at counts other than the job's, and how many those
    are. An on-prem partition offers every count up to its node's size (a row each, differing by
    count alone); a job is given its own count, so the others are noise in a table: the row at
    the job's count is kept, else the nearest (a node too small still says why). The decision's
    own offer (first, when `chosen_first`) always stays."""
    def group(o: dict[str, Any]) -> tuple[Any, ...]:
        return o["site"], o.get("zone"), o["instance_type"], o.get("spot"), o.get("accelerator")

    counts: dict[tuple[Any, ...], set[int]] = {}
    for o in offers:
        counts.setdefault(group(o), set()).add(int(o.get("count") or 0))
    nearest = {g: min(cs, key=lambda c: (abs(c - count), c)) for g, cs in counts.items()}
    kept = [o for i, o in enumerate(offers)
            if (i == 0 and chosen_first) or int(o.get("count") or 0) == nearest[group(o)]]
    return kept, len(offers) - len(kept)


def _wait_shown(offer: dict[str, Any], decision: dict[str, Any], weighed: str | None) -> float:
    """An offer's WAIT: for the partition the decision weighed, its projected wait (as its score
    has it), not the wait counted late past the last responsible moment (the reasons say both)."""
    if weighed is None or f"{offer['site']}/{offer['instance_type']}" != weighed:
        return float(offer.get("expected_wait_s") or 0)
    note = decision.get("projection") or {}
    return float(note.get("wait_s", decision["onprem_expected_wait_s"]))


def print_decision(decision: dict[str, Any], *, console: Console | None = None) -> None:
    """The run / wait / burst decision and the numbers behind it, money labelled with its currency."""
    console = console or Console()
    currency = decision.get("currency", "")
    console.print(f"[bold]decision:[/] {escape(str(decision.get('action')))}"
                  + (" (burst)" if decision.get("burst") else ""), highlight=False)
    reasons = decision.get("reasons") or []
    for reason in reasons if isinstance(reasons, list) else []:
        console.print(f"  - {escape(str(reason))}", highlight=False)
    parts = []
    skip = {"action", "burst", "reasons", "currency", "price_currency", "price_per_hour", "projection",
            "spot_outlook"}
    for key, value in decision.items():
        if key in skip or value is None:
            continue
        parts.append(f"{key}={value} {currency}" if key in MONEY_KEYS else f"{key}={value}")
    if decision.get("price_per_hour") is not None:
        parts.append(f"price_per_hour={decision['price_per_hour']} {decision.get('price_currency', '')}")
    if parts:
        console.print("  " + escape(", ".join(parts)), highlight=False)
    if decision.get("spot_outlook"):
        console.print("  " + escape(spot_outlook_text(decision["spot_outlook"])), highlight=False)
    if decision.get("projection"):
        for line in projection_lines(decision["projection"]):
            console.print("  " + escape(line), highlight=False)


def projection_lines(p: dict[str, Any]) -> list[str]:
    """Where a projected on-prem wait came from, for a person."""
    ends = ", ".join(f"{r['units']} in {r['ends_in_s'] / 60:.0f} min" for r in p["running"][:5])
    return [
        f"projected wait on {p['partition']}: {minutes(p['wait_s'])}",
        f"  free now: {p['free_units']} unit(s); running: {p['running_jobs']} "
        f"(units freed: {ends or 'none'})",
        f"  ahead: {p['backend_queue_jobs']} pending at the backend, {p['queue_ahead_jobs']} waiting "
        f"in the broker ({p['queue_ahead_units']} units, {p['queue_ahead_unit_hours']} unit-hours)",
        f"  runtime ratio (actual / estimate) learned for this tenant: x{p['runtime_ratio']} "
        "(each running job's end uses its own tenant's)",
    ]
