"""`szb serve|submit|get|list|cancel|watch|status|spend`: the broker and its clients."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.client import BrokerClient, ClientError
from broker.commands._connect import add_connection_args, client_for
from broker.config import ConfigFileError, apply_env, load_config
from broker.jobfile import JobFileError, load_job_file
from broker.model import JobState
from broker.serde import spec_to_proto, state_from_proto, state_to_proto, ts_to_proto

Sub = "argparse._SubParsersAction[argparse.ArgumentParser]"
BEIJING_TZ = timezone(timedelta(hours=8))

_STATE_STYLE = {
    JobState.QUEUED: "yellow",
    JobState.PLACING: "cyan",
    JobState.PROVISIONING: "cyan",
    JobState.RUNNING: "blue",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
    JobState.PREEMPTED: "yellow",
}


def _client_args(p: argparse.ArgumentParser) -> None:
    add_connection_args(p)
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the broker")
    p.add_argument("--config", type=Path, help="broker.yaml (default: embedded single-host setup)")
    p.add_argument("--listen", help="HOST:PORT to listen on")
    p.add_argument("--data-dir", type=Path, help="where the store and local jobs live")
    p.add_argument("--policy", type=Path, help="routing policy file (overrides broker.yaml)")
    p.add_argument("--tokens-file", type=Path, help="tokens file (overrides broker.yaml)")
    p.add_argument("--metrics-listen", help="HOST:PORT for Prometheus `/metrics` (env SZB_METRICS_LISTEN)")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON objects")
    p.add_argument(
        "--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    )
    p.add_argument(
        "--role",
        choices=["all", "api", "scheduler"],
        help="all: one process (default); api: a stateless RPC replica; scheduler: the elected "
        "decision loop (api and scheduler need a PostgreSQL store)",
    )
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("submit", help="submit job YAML files")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--client-id", help="retry-safe id (only with one file)")
    p.add_argument("--wait", action="store_true", help="follow the job; exit 0 only if it SUCCEEDED")
    _client_args(p)
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("get", help="show one job")
    p.add_argument("id")
    p.add_argument("--wide", action="store_true", help="more columns, nothing cut")
    _client_args(p)
    p.set_defaults(handler=cmd_get)

    p = sub.add_parser("list", help="list jobs")
    p.add_argument(
        "--state", action="append", default=[], type=str.upper, choices=[s.value for s in JobState]
    )
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token", default="", help="continue from a previous page's next token")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.add_argument("--tenant", default="", help="only this tenant's jobs (operators: any tenant)")
    p.add_argument("--wide", action="store_true", help="more columns, nothing cut (instance, cost, run time)")
    _client_args(p)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("id")
    _client_args(p)
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("watch", help="follow a job's events until it ends")
    p.add_argument("id")
    p.add_argument("--after", type=int, default=0, help="resume after this event seq")
    _client_args(p)
    p.set_defaults(handler=cmd_watch)


def _fail(message: str) -> int:
    print(f"szb: error: {message}", file=sys.stderr)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    from broker.app import serve_forever
    from broker.logs import configure

    try:
        # broker.yaml, then SZB_* environment variables, then flags; paths made absolute.
        config = apply_env(load_config(args.config))
    except ConfigFileError as exc:
        return _fail(str(exc))
    updates: dict[str, Any] = {}
    names = ["listen", "data_dir", "policy", "tokens_file", "metrics_listen", "log_format", "log_level"]
    names.append("role")
    for name in names:
        value = getattr(args, name)
        if value:
            updates[name] = value
    config = config.model_copy(update=updates).absolute()
    try:
        config.check_role()
    except ConfigFileError as exc:
        return _fail(str(exc))
    configure(config.log_format, config.log_level)
    try:
        asyncio.run(serve_forever(config))
    except Exception as exc:
        return _fail(f"broker stopped: {exc}")
    return 0


def _job_dict(job: job_pb2.Job) -> dict[str, Any]:
    d = MessageToDict(job, preserving_proto_field_name=True)
    d["state"] = state_from_proto(job.state).value
    return d


def _age(job: job_pb2.Job) -> str:
    if not job.HasField("start_time"):
        return "-"
    end = job.end_time.ToDatetime() if job.HasField("end_time") else datetime.now(UTC).replace(tzinfo=None)
    seconds = max(0, int((end - job.start_time.ToDatetime()).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _print_jobs(jobs: Iterable[job_pb2.Job], console: Console, *, wide: bool = False) -> None:
    """Ids are never cut (they are what users copy); the reason is cut to the terminal's width,
    or shown whole with `wide`, which also adds placement, cost and run time."""
    jobs = list(jobs)
    # An operator's list spans tenants: then say whose each job is.
    tenants = len({job.tenant for job in jobs}) > 1
    header = ["ID", *(["TENANT"] if tenants else []), "NAME", "STATE", "SITE", "ACCEL"]
    if wide:
        header += ["INSTANCE", "ATTEMPTS", "EXIT", "RAN", "COST"]
    rows: list[list[str]] = []
    states: list[JobState] = []
    for job in jobs:
        state = state_from_proto(job.state)
        acc = job.spec.resources.accelerators
        placed = f"{job.accelerator_count}x{job.accelerator}" if job.accelerator else ""
        wanted = f"{acc.count}x{'|'.join(acc.any_of) or 'any'}" if acc.count else "-"
        row = [job.id, *([job.tenant] if tenants else []), job.spec.name, state.value, job.site or "-",
               placed or wanted]
        if wide:
            row += [
                job.instance_type or "-",
                str(job.attempts),
                str(job.exit_code) if job.HasField("exit_code") else "-",
                _age(job),
                f"{job.cost_so_far:,.2f} {job.cost_currency}" if job.cost_currency else "-",
            ]
        row.append(job.pending_reason or job.message)
        rows.append(row)
        states.append(state)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    # Every column but the reason keeps its full width (3 characters of border each).
    room = console.width - sum(w + 3 for w in widths) - 4
    table = Table(show_lines=False)
    for col in header:
        table.add_column(col, no_wrap=True, justify="right" if col in ("ATTEMPTS", "COST") else "left")
    table.add_column("REASON", no_wrap=True)
    for row, state in zip(rows, states, strict=True):
        cells = [escape(c) for c in row[:-1]]
        cells[header.index("STATE")] = f"[{_STATE_STYLE[state]}]{state.value}[/]"
        reason = row[-1] if wide else _fit(row[-1], max(room, len("REASON")))
        table.add_row(*cells, escape(reason))
    console.print(table)


def _console(wide: bool = False) -> Console:
    """Wide output is never folded to the terminal: lines are as long as their content."""
    return Console(width=100_000) if wide else Console()


def cmd_submit(args: argparse.Namespace) -> int:
    if args.client_id and len(args.files) > 1:
        print("szb: usage error: --client-id needs exactly one file", file=sys.stderr)
        return 2
    requests = []
    problems = []
    for path in args.files:
        try:
            spec = load_job_file(path)
        except JobFileError as exc:
            problems.extend(exc.problems)
            continue
        requests.append(pb.SubmitJobRequest(job=spec_to_proto(spec), client_id=args.client_id or ""))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    console = Console()
    with client_for(args) as client:
        try:
            responses = client.submit(requests)
        except ClientError as exc:
            return _fail(str(exc))
        jobs = [r.job for r in responses]
        if args.output == "json" and not args.wait:
            print(json.dumps([{**_job_dict(r.job), "created": r.created} for r in responses], indent=2))
        elif not args.wait:
            _print_jobs(jobs, console)
        if not args.wait:
            return 0
        ok = True
        for job in jobs:
            final = _follow(client, job.id, 0, args.output, console)
            ok = ok and final == JobState.SUCCEEDED
        if args.output == "json":
            print(json.dumps([_job_dict(client.get(j.id).job) for j in jobs], indent=2))
        return 0 if ok else 1


def _follow(client: BrokerClient, job_id: str, after: int, output: str, console: Console) -> JobState:
    state = JobState.QUEUED
    try:
        for resp in client.watch(job_id, after):
            ev = resp.event
            state = state_from_proto(ev.state)
            if output == "json":
                continue
            console.print(
                f"{ev.time.ToDatetime():%H:%M:%S} {job_id} #{ev.seq:<3} "
                f"[{_STATE_STYLE[state]}]{state.value:<12}[/] {escape(ev.kind)}: {escape(ev.message)}",
                highlight=False,
            )
    except ClientError as exc:
        print(f"szb: error: {exc}", file=sys.stderr)
    job = client.get(job_id).job
    state = state_from_proto(job.state)
    if output != "json" and job.log_tail and state.terminal:
        console.print(f"[dim]--- {job_id} output (tail) ---[/]")
        console.print(job.log_tail.rstrip(), markup=False, highlight=False)
    return state


def cmd_get(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            job = client.get(args.id).job
        except ClientError as exc:
            return _fail(str(exc))
    if args.output == "json":
        print(json.dumps(_job_dict(job), indent=2))
    else:
        _print_jobs([job], _console(args.wide), wide=args.wide)
        if job.log_tail:
            print(job.log_tail.rstrip())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"szb: usage error: --label {item!r} must be KEY=VALUE", file=sys.stderr)
            return 2
        labels[key] = value
    states = [state_to_proto(JobState(s)) for s in args.state]
    jobs: list[job_pb2.Job] = []
    token = args.page_token
    with client_for(args) as client:
        while True:
            try:
                resp = client.list(
                    pb.ListJobsRequest(
                        states=states, labels=labels, page_size=args.page_size, page_token=token,
                        tenant=args.tenant,
                    )
                )
            except ClientError as exc:
                return _fail(str(exc))
            jobs.extend(resp.jobs)
            token = resp.next_page_token
            if not token or not args.all:
                break
    if args.output == "json":
        print(json.dumps({"jobs": [_job_dict(j) for j in jobs], "next_page_token": token}, indent=2))
    else:
        _print_jobs(jobs, _console(args.wide), wide=args.wide)
        if token:
            print(f"(more: --all, or --page-token {token})")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            job = client.cancel(args.id).job
        except ClientError as exc:
            return _fail(str(exc))
    if args.output == "json":
        print(json.dumps(_job_dict(job), indent=2))
    else:
        _print_jobs([job], Console())
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    console = Console()
    with client_for(args) as client:
        if args.output == "json":
            try:
                for resp in client.watch(args.id, args.after):
                    print(
                        json.dumps(
                            {
                                **MessageToDict(resp.event, preserving_proto_field_name=True),
                                "state": state_from_proto(resp.event.state).value,
                            }
                        ),
                        flush=True,
                    )
            except ClientError as exc:
                return _fail(str(exc))
            return 0
        try:
            client.get(args.id)
        except ClientError as exc:
            return _fail(str(exc))
        _follow(client, args.id, args.after, args.output, console)
    return 0


def register_operator(sub: Any) -> None:
    p = sub.add_parser(
        "token",
        help="make a token: its tokens-file entry goes to stdout (append it as is), the token to stderr",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", choices=["tenant", "operator"], default="tenant",
                   help="operator: may see and cancel every tenant's jobs")
    p.add_argument("--name", default="", help="who holds the token (recorded with cancels)")
    p.add_argument("--token", help="hash this token instead of making a new one")
    p.set_defaults(handler=cmd_token)

    p = sub.add_parser("status", help="capacity, your jobs, quota and budget (operators: every tenant)")
    _client_args(p)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("spend", help="burst spend and reservations (this month, or a range), budget left")
    p.add_argument("--tenant", default="", help="another tenant (internal tenants only); * for all")
    p.add_argument("--since", type=_when, help="from: YYYY-MM-DD (Beijing day), an ISO time, or 36h / 7d ago")
    p.add_argument("--until", type=_when, help="until (exclusive), same forms; default now")
    p.add_argument("--by", choices=["day", "site", "tenant"], help="one line per day, site or tenant")
    _client_args(p)
    p.set_defaults(handler=cmd_spend)


def cmd_status(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            resp = client.status()
        except ClientError as exc:
            return _fail(str(exc))
    if args.output == "json":
        body = MessageToDict(resp, preserving_proto_field_name=True)
        body.pop("status_json", None)
        body["tenants"] = [
            {
                "tenant": t.tenant,
                "budget": t.budget if t.HasField("budget") else None,
                "budget_left": t.budget_left if t.HasField("budget_left") else None,
                "vouchers_left": t.vouchers_left,
            }
            for t in resp.tenants
        ]
        print(json.dumps(body, indent=2))
        return 0
    console = Console()
    table = Table(title=f"On-prem capacity (policy {resp.policy_hash[:12]})")
    for col in ("SITE", "PARTITION", "ACCELERATOR", "FREE/TOTAL", "QUEUED", "EXPECTED WAIT"):
        table.add_column(col)
    for p in resp.partitions:
        table.add_row(
            escape(p.site),
            escape(p.partition),
            escape(p.accelerator or "cpu"),
            f"{p.free}/{p.total}",
            str(p.queued_jobs),
            f"{p.expected_wait_seconds / 60:.0f} min",
        )
    console.print(table)
    console.print("Jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(resp.jobs_by_state.items())))
    console.print(
        "Active by site: "
        + (", ".join(f"{k} {v}" for k, v in sorted(resp.active_jobs_by_site.items())) or "none")
    )
    console.print(f"Burst decisions in the last hour: {resp.burst_decisions_last_hour}")
    if resp.HasField("refused_policy"):
        r = resp.refused_policy
        console.print(
            f"[red]policy reload refused[/]: {escape(r.source)} (hash {r.hash[:12]}) is invalid; "
            f"policy {resp.policy_hash[:12]} stays in force"
        )
        for err in r.errors:
            console.print(f"  {escape(err)}", highlight=False)
    if resp.refused_tokens_file:
        console.print("[red]tokens file reload refused[/] (the last good tokens stay in force):")
        for err in resp.refused_tokens_file:
            console.print(f"  {escape(err)}", highlight=False)
    for t in resp.tenants:
        if t.HasField("budget"):
            left = t.budget_left if t.HasField("budget_left") else t.budget
            money = f"{left:,.2f} of {t.budget:,.2f} {resp.currency} left"
        else:
            money = "no budget limit"
        console.print(f"  {escape(t.tenant)}: {money}, vouchers {t.vouchers_left:,.2f} {resp.currency}")
    for site, why in sorted(resp.unhealthy_sites.items()):
        console.print(f"[red]unhealthy[/] {escape(site)}: {escape(why)}")
    if resp.HasField("quota"):
        q = resp.quota
        console.print(
            f"Quota of {q.tenant}: {q.unfinished_jobs}/{q.max_queued_jobs} unfinished jobs, "
            f"submit {q.submit_rate:g}/s (burst {q.submit_burst}, {q.submit_tokens:.0f} now), "
            f"{q.watch_streams}/{q.max_watch_streams} watch streams; per job at most "
            f"{q.max_spec_bytes} bytes, {q.max_env} env, {q.max_labels} labels, {q.max_argv} args"
        )
    return 0


def _when(text: str) -> datetime:
    """A point in time for --since/--until: a Beijing date, an ISO date-time, or `36h`/`7d` ago."""
    from broker.burst.money import BEIJING

    units = {"m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not YYYY-MM-DD, an ISO date-time, or a duration like 36h or 7d"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=BEIJING)


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
            return _fail(str(exc))
    if args.output == "json":
        body = MessageToDict(
            resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for key in ("budget", "budget_left", "vouchers_left"):
            body.setdefault(key, None)  # unset: no budget (or several tenants), never 0
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
        console.print(f"Budget {resp.budget:,.2f} {resp.currency} this month, left {left:,.2f}")
    elif args.tenant != "*":
        console.print("No monthly budget limit")
    if resp.HasField("vouchers_left"):
        console.print(f"Vouchers left {resp.vouchers_left:,.2f} {resp.currency}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print the tokens-file entry (stdout, appendable as is) and the new token (stderr).

    `szb token --tenant T >> tokens.yaml` keeps only the hash on disk; the token itself is
    shown once on the terminal, to hand to the tenant.
    """
    import secrets

    from broker.auth import Role, token_entry_line

    token = args.token or secrets.token_urlsafe(32)
    if not args.token:
        print(f"szb: token for {args.tenant} (give it to them, store it nowhere else): {token}",
              file=sys.stderr)
    print(token_entry_line(args.tenant, token, Role(args.role), args.name))
    return 0
