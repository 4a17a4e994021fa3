"""`szb serve|submit|get|list|cancel|watch|status|spend`: the broker and its clients."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
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
from broker.serde import spec_to_proto, state_from_proto, state_to_proto

Sub = "argparse._SubParsersAction[argparse.ArgumentParser]"

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
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("submit", help="submit job YAML files")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--client-id", help="retry-safe id (only with one file)")
    p.add_argument("--wait", action="store_true", help="follow the job; exit 0 only if it SUCCEEDED")
    _client_args(p)
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("get", help="show one job")
    p.add_argument("id")
    _client_args(p)
    p.set_defaults(handler=cmd_get)

    p = sub.add_parser("list", help="list jobs")
    p.add_argument(
        "--state", action="append", default=[], type=str.upper, choices=[s.value for s in JobState]
    )
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--all", action="store_true", help="follow every page")
    p.add_argument("--tenant", default="", help="only this tenant's jobs (operators: any tenant)")
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
    for name in ("listen", "data_dir", "policy", "tokens_file", "metrics_listen", "log_format", "log_level"):
        value = getattr(args, name)
        if value:
            updates[name] = value
    config = config.model_copy(update=updates).absolute()
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


def _print_jobs(jobs: Iterable[job_pb2.Job], console: Console) -> None:
    table = Table(show_lines=False)
    for col in ("ID", "NAME", "STATE", "SITE", "ACCEL", "ATTEMPTS", "EXIT", "MESSAGE"):
        table.add_column(col)
    for job in jobs:
        state = state_from_proto(job.state)
        acc = job.spec.resources.accelerators
        table.add_row(
            job.id,
            job.spec.name,
            f"[{_STATE_STYLE[state]}]{state.value}[/]",
            job.site or "-",
            f"{acc.count}x{'|'.join(acc.any_of) or 'any'}" if acc.count else "-",
            str(job.attempts),
            str(job.exit_code) if job.HasField("exit_code") else "-",
            job.message[:60],
        )
    console.print(table)


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
                f"[{_STATE_STYLE[state]}]{state.value:<12}[/] {ev.kind}: {ev.message}",
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
        _print_jobs([job], Console())
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
    token = ""
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
        _print_jobs(jobs, Console())
        if token:
            print(f"(more: --all, or next page token {token})")
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

    p = sub.add_parser("status", help="on-prem capacity, queues, bursts and spend (operators)")
    _client_args(p)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("spend", help="this month's spend, reservations, budget and vouchers")
    p.add_argument("--tenant", default="", help="another tenant (internal tenants only); * for all")
    _client_args(p)
    p.set_defaults(handler=cmd_spend)


def cmd_status(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            resp = client.status()
        except ClientError as exc:
            return _fail(str(exc))
    extra = json.loads(resp.status_json or "{}")
    if args.output == "json":
        body = MessageToDict(resp, preserving_proto_field_name=True)
        body.pop("status_json", None)
        print(json.dumps({**body, **extra}, indent=2))
        return 0
    console = Console()
    table = Table(title=f"On-prem capacity (policy {resp.policy_hash[:12]})")
    for col in ("SITE", "PARTITION", "ACCELERATOR", "FREE/TOTAL", "EXPECTED WAIT"):
        table.add_column(col)
    for p in resp.partitions:
        table.add_row(
            p.site,
            p.partition,
            p.accelerator or "cpu",
            f"{p.free}/{p.total}",
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
            f"[red]policy reload refused[/]: {r.source} (hash {r.hash[:12]}) is invalid; "
            f"policy {resp.policy_hash[:12]} stays in force"
        )
        for err in r.errors:
            console.print(f"  {escape(err)}", highlight=False)
    for t in extra.get("tenants", []):
        left = (
            "no budget"
            if t["budget_left"] is None
            else f"{t['budget_left']:.2f} {extra.get('currency', '')} left"
        )
        console.print(f"  {t['tenant']}: {left}, vouchers {t['vouchers_left']:.2f}")
    for site, why in extra.get("unhealthy", {}).items():
        console.print(f"[red]unhealthy[/] {site}: {why}")
    return 0


def cmd_spend(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            resp = client.spend(args.tenant)
        except ClientError as exc:
            return _fail(str(exc))
    if args.output == "json":
        print(
            json.dumps(
                MessageToDict(
                    resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                ),
                indent=2,
            )
        )
        return 0
    table = Table(title=f"Spend in {resp.month} ({resp.currency})")
    for col in ("TENANT", "SITE", "SPENT", "RESERVED"):
        table.add_column(col)
    for line in resp.lines:
        table.add_row(line.tenant, line.site, f"{line.spent:.2f}", f"{line.reserved:.2f}")
    console = Console()
    console.print(table)
    console.print(
        f"Budget {resp.budget:.2f}, left {resp.budget_left:.2f}, vouchers left {resp.vouchers_left:.2f}"
    )
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
