"""`szb token|status|spend`: tokens for the tokens file, the broker's state, money spent."""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.markup import escape
from rich.table import Table

from broker.api import broker_service_pb2 as pb
from broker.auth import Role, append_token_entry, token_entry_line
from broker.burst.projection import minutes
from broker.client import ClientError
from broker.commands._args import parse_since
from broker.commands._connect import add_client_args, client_for
from broker.commands._console import Console
from broker.commands._output import fail
from broker.serde import ts_to_proto
from broker.yamlfile import PolicyError

BEIJING_TZ = timezone(timedelta(hours=8))


def register(sub: Any) -> None:
    p = sub.add_parser(
        "token",
        help="make a token: its tokens-file entry goes to stdout (or --append FILE), the token to stderr",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", choices=["tenant", "operator"], default="tenant",
                   help="operator: may see and cancel every tenant's jobs")
    p.add_argument("--name", default="", help="who holds the token (recorded with cancels)")
    p.add_argument("--token", help="hash this token instead of making a new one")
    p.add_argument("--append", metavar="FILE", type=Path,
                   help="append the entry to this tokens file in its layout (made if missing), not to stdout")
    p.set_defaults(handler=cmd_token)

    p = sub.add_parser("status", help="capacity, your jobs, quota and budget (operators: every tenant)")
    add_client_args(p)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("spend", help="burst spend and reservations (this month, or a range), budget left")
    p.add_argument(
        "--tenant", default="", help="another tenant (internal tenants only); * for all (operators' default)"
    )
    p.add_argument(
        "--since", type=parse_since, help="from: YYYY-MM-DD (Beijing day), an ISO time, or 36h / 7d ago"
    )
    p.add_argument("--until", type=parse_since, help="until (exclusive), same forms; default now")
    p.add_argument("--by", choices=["day", "site", "tenant"], help="one line per day, site or tenant")
    add_client_args(p)
    p.set_defaults(handler=cmd_spend)



def cmd_status(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            resp = client.status()
        except ClientError as exc:
            return fail(str(exc))
    if args.output == "json":
        print(json.dumps(_status_json(resp), indent=2))
        return 0
    console = Console()
    _print_capacity(resp, console)
    _print_refusals(resp, console)
    _print_tenants(resp, console)
    _print_fair_share(resp, console)
    return 0


def _print_fair_share(resp: pb.GetStatusResponse, console: Console) -> None:
    """Each tenant's weight, use over its fair share, and guaranteed units in use (borrowed beyond)."""
    if not resp.fair_share:
        return
    table = Table(title="Fair share on-prem")
    for col in ("TENANT", "WEIGHT", "USE", "VS SHARE", "QUOTA IN USE / GUARANTEED (BORROWED)"):
        table.add_column(col, overflow="fold")
    for t in resp.fair_share:
        quotas = ", ".join(
            f"{q.partition} {q.in_use}/{q.guaranteed}" + (f" ({q.borrowed} borrowed)" if q.borrowed else "")
            for q in t.quotas
        )
        ratio = f"{t.share_ratio:.2f}×" if t.HasField("share_ratio") else "idle"
        table.add_row(escape(t.tenant), f"{t.weight:g}", f"{t.usage_share:.1%}", ratio, quotas or "-")
    console.print(table)


def _status_json(resp: pb.GetStatusResponse) -> dict[str, Any]:
    body = MessageToDict(resp, preserving_proto_field_name=True)
    body.pop("status_json", None)
    body["tenants"] = [
        {
            "tenant": t.tenant,
            "budget": t.budget if t.HasField("budget") else None,
            "budget_left": t.budget_left if t.HasField("budget_left") else None,
            "budget_over": t.budget_over,
            "budget_alert": t.budget_alert,
            "vouchers_left": t.vouchers_left,
        }
        for t in resp.tenants
    ]
    if resp.HasField("burst_cap"):  # every figure, 0 included (operators only)
        c = resp.burst_cap
        body["burst_cap"] = {"cap": c.cap, "used": c.used, "left": c.left, "over": c.over}
    body["fair_share"] = [  # every figure, 0 included
        {
            "tenant": t.tenant, "weight": t.weight, "usage_share": t.usage_share,
            "share_ratio": t.share_ratio if t.HasField("share_ratio") else None,
            "quotas": [{"partition": q.partition, "guaranteed": q.guaranteed, "in_use": q.in_use,
                        "borrowed": q.borrowed} for q in t.quotas],
        }
        for t in resp.fair_share
    ]
    if resp.HasField("scheduler"):  # the epoch as a number and `expired` even when false
        lease = resp.scheduler
        body["scheduler"] = {
            "holder": lease.holder,
            "epoch": lease.epoch,
            "lease_until": lease.lease_until.ToDatetime(tzinfo=UTC).isoformat(),
            "expired": lease.expired,
        }
    if notice := json.loads(resp.status_json or "{}").get("certificate"):  # (operators only)
        body["certificate"] = notice
    return body


def _print_capacity(resp: pb.GetStatusResponse, console: Console) -> None:
    """On-prem partitions, jobs per state and site, recent burst decisions."""
    table = Table(title=f"On-prem capacity (policy {resp.policy_hash[:12]})")
    for col in ("SITE", "PARTITION", "ACCELERATOR", "FREE/TOTAL", "QUEUED", "EXPECTED WAIT"):
        table.add_column(col, overflow="fold")  # (ids whole, folded: never cut with an ellipsis)
    for p in resp.partitions:
        table.add_row(
            escape(p.site),
            escape(p.partition),
            escape(p.accelerator or "cpu"),
            f"{'?' if p.capacity_unknown else p.free}/{p.total}",
            str(p.queued_jobs),
            "unknown (site unhealthy)" if p.capacity_unknown else minutes(p.expected_wait_seconds),
        )
    console.print(table)
    console.print("Jobs: " + (", ".join(f"{k} {v}" for k, v in sorted(resp.jobs_by_state.items())) or "none"))
    console.print(
        "Active by site: "
        + (", ".join(f"{k} {v}" for k, v in sorted(resp.active_jobs_by_site.items())) or "none")
    )
    # Jobs started at a cloud site (a launch the cloud refused is a failover, not a burst).
    console.print(f"Jobs burst in the last hour: {resp.burst_decisions_last_hour}")
    if resp.HasField("scheduler"):
        _print_scheduler(resp.scheduler, console)


def _print_scheduler(lease: pb.SchedulerLease, console: Console) -> None:
    """Which scheduler leads (split deployment): the lease's holder, epoch and end."""
    if not lease.holder:
        console.print("[red]Scheduler: none has ever been elected[/]: start a `szb serve --role scheduler` "
                      "on this store; until then nothing is decided or run")
        return
    until = lease.lease_until.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    who = f"{escape(lease.holder)} (epoch {lease.epoch})"
    if lease.expired:
        console.print(f"[red]Scheduler: none active[/]: the lease of {who} ran out at {until}")
    else:
        console.print(f"Scheduler: {who} leads, lease until {until}")


def _print_refusals(resp: pb.GetStatusResponse, console: Console) -> None:
    """Reloads of the policy or the tokens file that were refused (the old ones stay)."""
    if resp.HasField("refused_policy"):
        r = resp.refused_policy
        console.print(
            f"[red]policy reload refused[/]: {escape(r.source)} (hash {r.hash[:12]}) is invalid; "
            f"policy {resp.policy_hash[:12]} stays in force"
        )
        for err in r.errors:  # (whole, never folded or cut: an error's end names the field)
            console.print(f"  {escape(err)}", highlight=False, soft_wrap=True)
    if resp.refused_tokens_file:
        console.print("[red]tokens file reload refused[/] (the last good tokens stay in force):")
        for err in resp.refused_tokens_file:
            console.print(f"  {escape(err)}", highlight=False, soft_wrap=True)
    for exposed in resp.exposed_secret_files:
        console.print(f"[red]secret file open to jobs[/]: {escape(exposed)}", highlight=False, soft_wrap=True)
    if notice := json.loads(resp.status_json or "{}").get("certificate"):
        console.print(f"[yellow]certificate[/]: {escape(notice)}", highlight=False, soft_wrap=True)


def _used(budget: float, left: float, over: float = 0.0) -> str:
    """How much of a budget is spent or reserved, as a percentage (past 100% when over it)."""
    return f"{(budget - left + over) / budget:.0%}" if budget else "-"


def _over(over: float) -> str:
    """What a budget lowered below the month's spend is exceeded by ("" when within it)."""
    return f"over by {over:,.2f}" if over > 0 else ""


def _print_cap(cap: pb.BurstCap, currency: str, console: Console) -> None:
    """The global burst cap: every tenant's spend and reservations this month against it."""
    over = f", [red]{_over(cap.over)}[/]" if cap.over > 0 else ""
    console.print(
        f"Global burst cap: {cap.used:,.2f} of {cap.cap:,.2f} {currency} spent or reserved "
        f"this month, {cap.left:,.2f} left{over}"
    )


def _print_tenants(resp: pb.GetStatusResponse, console: Console) -> None:
    """The global burst cap, budgets and vouchers per tenant, unhealthy sites, the caller's quota."""
    if resp.HasField("burst_cap"):
        _print_cap(resp.burst_cap, resp.currency, console)
    for t in resp.tenants:
        if t.HasField("budget"):
            left = t.budget_left if t.HasField("budget_left") else t.budget
            money = f"{left:,.2f} of {t.budget:,.2f} {resp.currency} left"
            if t.budget_over > 0:
                money += f" [red]({_over(t.budget_over)})[/]"
            if t.budget_alert:
                money += f" [red](alert: {_used(t.budget, left, t.budget_over)} of the budget used)[/]"
        else:
            money = "no budget limit"
        console.print(f"  {escape(t.tenant)}: {money}, vouchers {t.vouchers_left:,.2f} {resp.currency}")
    for site, why in sorted(resp.unhealthy_sites.items()):
        console.print(f"[red]unhealthy[/] {escape(site)}: {escape(why)}", soft_wrap=True)
    for d in resp.drains:  # (an operator's hand: `szb undrain SITE` puts it back)
        since = d.since.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")
        why = escape(d.reason or "no reason given")
        who = f"{escape(d.site)} by {escape(d.by)}"
        console.print(f"[yellow]drained[/] {who} since {since}: {why}", soft_wrap=True)
    for target, why in sorted(json.loads(resp.status_json or "{}").get("blocked", {}).items()):
        console.print(f"[yellow]blocked[/] {escape(target)}: {escape(why)}", soft_wrap=True)
    if resp.HasField("quota"):
        q = resp.quota
        console.print(
            f"Quota of {q.tenant}: {q.unfinished_jobs}/{q.max_queued_jobs} unfinished jobs, "
            f"submit {q.submit_rate:g}/s (burst {q.submit_burst}, {q.submit_tokens:.0f} now), "
            f"{q.watch_streams}/{q.max_watch_streams} watch streams; per job at most "
            f"{q.max_spec_bytes} bytes, {q.max_env} env, {q.max_labels} labels, {q.max_argv} args"
        )


_GROUPING = {
    None: pb.SPEND_GROUPING_UNSPECIFIED,
    "day": pb.SPEND_GROUPING_DAY,
    "site": pb.SPEND_GROUPING_SITE,
    "tenant": pb.SPEND_GROUPING_TENANT,
}


def cmd_spend(args: argparse.Namespace) -> int:
    request = pb.GetSpendRequest(tenant=args.tenant, group_by=_GROUPING[args.by])
    if args.since is not None:
        request.since.CopyFrom(ts_to_proto(args.since))
    if args.until is not None:
        request.until.CopyFrom(ts_to_proto(args.until))
    with client_for(args) as client:
        try:
            resp = client.spend(request)
        except ClientError as exc:
            return fail(str(exc))
    if args.output == "json":
        body = MessageToDict(
            resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for key in ("budget", "budget_left", "budget_alert_fraction", "vouchers_left", "burst_cap"):
            body.setdefault(key, None)  # unset: no budget (or several tenants; one: no cap), never 0
        print(json.dumps(body, indent=2))
        return 0
    since = resp.since.ToDatetime(tzinfo=UTC).astimezone(BEIJING_TZ)
    until = resp.until.ToDatetime(tzinfo=UTC).astimezone(BEIJING_TZ)
    table = Table(
        title=f"Spend {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} Beijing time ({resp.currency})"
    )
    cols = {"day": ["DAY"], "site": ["SITE"], "tenant": ["TENANT"], None: ["TENANT", "SITE"]}[args.by]
    for col in (*cols, "SPENT", "RESERVED", "VOUCHERS"):
        table.add_column(col, justify="right" if col in ("SPENT", "RESERVED", "VOUCHERS") else "left")
    for line in resp.lines:
        keys = {"DAY": line.day, "SITE": line.site, "TENANT": line.tenant}
        money = (f"{line.spent:,.2f}", f"{line.reserved:,.2f}", f"{line.voucher:,.2f}")
        table.add_row(*(escape(keys[c]) for c in cols), *money)
    console = Console()
    console.print(table)
    console.print(f"Total spent {resp.total_spent:,.2f} {resp.currency}, reserved {resp.total_reserved:,.2f}")
    if resp.HasField("budget"):
        left = resp.budget_left if resp.HasField("budget_left") else resp.budget
        over = f", [red]{_over(resp.budget_over)}[/]" if resp.budget_over > 0 else ""
        console.print(f"Budget {resp.budget:,.2f} {resp.currency} this month, left {left:,.2f}{over}")
        if resp.budget_alert:
            console.print(
                f"[red]alert: {_used(resp.budget, left, resp.budget_over)} of the budget used[/] "
                f"(alert at {resp.budget_alert_fraction:.0%})"
            )
    elif resp.HasField("vouchers_left"):  # set for one tenant only (an operator's default is all)
        console.print("No monthly budget limit")
    if resp.HasField("burst_cap"):
        _print_cap(resp.burst_cap, resp.currency, console)
    if resp.HasField("vouchers_left"):
        console.print(f"Vouchers left {resp.vouchers_left:,.2f} {resp.currency}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print the tokens-file entry (stdout, or appended to `--append FILE`) and the new token (stderr).

    `szb token --tenant T >> tokens.yaml` keeps only the hash on disk; the token itself is
    shown once on the terminal, to hand to the tenant.
    """
    from broker.policy.schema import ID_PATTERN

    if not re.fullmatch(ID_PATTERN, args.tenant):  # (the tokens file would refuse it, or fold it)
        return fail(f"--tenant {args.tenant!r}: a tenant id is lowercase letters, digits and '-', "
                    "as the policy's tenants.id")  # fmt: skip
    token = args.token or secrets.token_urlsafe(32)
    entry = token_entry_line(args.tenant, token, Role(args.role), args.name)
    if args.append is not None:
        try:  # (before the token is shown: a token no file holds is no use)
            append_token_entry(args.append, entry)
        except PolicyError as exc:
            return fail(f"--append: {exc} (the file is unchanged)")
        print(f"szb: entry for {args.tenant} appended to {args.append}", file=sys.stderr)
    if not args.token:
        print(f"szb: token for {args.tenant} (give it to them, store it nowhere else): {token}",
              file=sys.stderr)
    if args.append is None:
        print(entry)
    return 0
