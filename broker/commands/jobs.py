"""`szb serve|submit|get|list|cancel|watch`: the broker and its jobs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.markup import escape

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.client import BrokerClient, ClientError
from broker.commands._args import BEIJING, event_seq, job_id, page_size
from broker.commands._connect import add_client_args, client_for
from broker.commands._console import Console
from broker.commands._output import STATE_STYLE, console_for, fail, job_dict, print_jobs, shown_output
from broker.config import ConfigFileError, apply_env, apply_flags, load_config
from broker.jobfile import JobFileError, load_job_file
from broker.jobspec import LABEL_KEY_RULE, may_be_label_key
from broker.jobview import MAX_PAGE_SIZE
from broker.logs import redact
from broker.model import JobState
from broker.serde import spec_to_proto, state_from_proto, state_to_proto

Sub = "argparse._SubParsersAction[argparse.ArgumentParser]"


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
    add_client_args(p)
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("get", help="show one job")
    p.add_argument("id", type=job_id)
    p.add_argument("--wide", action="store_true", help="more columns, nothing cut")
    add_client_args(p)
    p.set_defaults(handler=cmd_get)

    p = sub.add_parser("list", help="list jobs")
    p.add_argument(
        "--state", action="append", default=[], type=str.upper, choices=[s.value for s in JobState]
    )
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--page-size", type=page_size, default=100,
                   help=f"jobs a page (the broker answers at most {MAX_PAGE_SIZE})")
    p.add_argument("--page-token", default="", help="continue from a previous page's next token")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.add_argument("--tenant", default="", help="only this tenant's jobs (operators: any tenant)")
    p.add_argument("--wide", action="store_true", help="more columns, nothing cut (instance, cost, run time)")
    add_client_args(p)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("id", type=job_id)
    add_client_args(p)
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("watch", help="follow a job's events until it ends")
    p.add_argument("id", type=job_id)
    p.add_argument("--after", type=event_seq, default=0, help="resume after this event seq")
    add_client_args(p)
    p.set_defaults(handler=cmd_watch)


def cmd_serve(args: argparse.Namespace) -> int:
    from broker.logs import configure
    from broker.serving import serve_forever

    # Known before broker.yaml is read, so a file it cannot read is a record too under JSON.
    log_format = args.log_format or os.environ.get("SZB_LOG_FORMAT", "").strip().lower()
    try:
        # broker.yaml, then SZB_* environment variables, then flags; paths made absolute.
        config = apply_env(load_config(args.config))
    except ConfigFileError as exc:
        return _stopped(str(exc), log_format, configure)
    updates: dict[str, Any] = {}
    names = ["listen", "data_dir", "policy", "tokens_file", "metrics_listen", "log_format", "log_level"]
    names.append("role")
    for name in names:
        value = getattr(args, name)
        if value:
            updates[name] = value
    try:
        config = apply_flags(config, updates).absolute()
        config.check_role()
    except ConfigFileError as exc:
        return _stopped(str(exc), log_format, configure)
    configure(config.log_format, config.log_level)
    try:
        asyncio.run(serve_forever(config, args.config.resolve() if args.config else None))
    except Exception as exc:
        return _stopped(f"broker stopped: {exc}", config.log_format, None)
    # The last line of a clean stop (SIGTERM, SIGINT): a log reader knows it was not a crash.
    logging.getLogger("broker").info("stopped; running jobs keep running", extra={"event": "stopped"})
    return 0


def _stopped(message: str, log_format: str, configure: Callable[[str], None] | None) -> int:
    """Exit 1 for a broker that could not serve: szb's plain error line, or under JSON logs one
    CRITICAL record and nothing else (a plain line beside it is the one a JSON pipeline drops)."""
    if log_format != "json":
        return fail(message)
    if configure is not None:  # (the log is not configured yet: broker.yaml did not read)
        configure("json")
    if not message.startswith("broker stopped: "):
        message = f"broker stopped: {message}"
    logging.getLogger("broker").critical("%s", redact(message), extra={"event": "stopped"})
    return 1


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
            return fail(str(exc) + _files_named(exc.subjects, args.files))
        jobs = [r.job for r in responses]
        for r in responses:
            if not r.created:  # the id's earlier job, whatever this file says: say so, or it looks new
                print(f"szb: client id {args.client_id!r} already names job {r.job.id} ({r.job.spec.name}); "
                      "nothing new was submitted", file=sys.stderr)
        if args.output == "json" and not args.wait:
            print(json.dumps([{**job_dict(r.job), "created": r.created} for r in responses], indent=2))
        elif not args.wait:
            print_jobs(jobs, console)
        if not args.wait:
            return 0
        ok = True
        for job in jobs:
            final = _follow(client, job.id, 0, args.output, console)
            ok = ok and final == JobState.SUCCEEDED
        if args.output == "json":
            print(json.dumps([job_dict(client.get(j.id).job) for j in jobs], indent=2))
        return 0 if ok else 1


def _files_named(subjects: list[str], files: list[Path]) -> str:
    """Which file each `requests[i]` / `job[i]` an error names is (several files go as one batch,
    and the server counts them, not their names)."""
    if len(files) < 2:
        return ""
    found = sorted({int(m.group(1)) for s in subjects if (m := re.match(r"(?:requests|job)\[(\d+)\]", s))})
    return "".join(f"\n  (requests[{i}] is {files[i]})" for i in found if i < len(files))


def _follow(client: BrokerClient, job_id: str, after: int, output: str, console: Console) -> JobState:
    state = JobState.QUEUED
    said: ClientError | None = None  # the stream's error: the final read failing alike is not said twice
    try:
        for resp in client.watch(job_id, after):
            ev = resp.event
            state = state_from_proto(ev.state)
            if output == "json":
                continue
            # One line per event (soft_wrap): a pipe is 80 columns to rich, and grep sees lines.
            # In Beijing time with its date, as `szb audit` and `szb spend` show times (it was UTC).
            when = ev.time.ToDatetime(tzinfo=UTC) + BEIJING
            console.print(
                f"{when:%Y-%m-%d %H:%M:%S} {job_id} #{ev.seq:<3} "
                f"[{STATE_STYLE[state]}]{state.value:<12}[/] {escape(ev.kind)}: {escape(ev.message)}",
                highlight=False,
                soft_wrap=True,
            )
    except ClientError as exc:
        said = exc
        print(f"szb: error: {exc}", file=sys.stderr)
    try:
        job = client.get(job_id).job
    except ClientError as exc:  # (the broker went away, or the token was withdrawn, meanwhile)
        if said is None or exc.code != said.code:  # (the same UNAVAILABLE: the broker is still gone)
            print(f"szb: error: {exc}", file=sys.stderr)
        return JobState.QUEUED if not state.terminal else state
    state = state_from_proto(job.state)
    if output != "json" and job.log_tail and state.terminal:
        console.print(f"[dim]--- {job_id} output (tail) ---[/]")
        print(shown_output(job.log_tail.rstrip()), flush=True)  # its own lines, never folded by rich
    return state


def cmd_get(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            job = client.get(args.id).job
        except ClientError as exc:
            return fail(str(exc))
    if args.output == "json":
        print(json.dumps(job_dict(job), indent=2))
    else:
        # An operator reading one job must see whose it is (a tenant sees its own name: harmless).
        print_jobs([job], console_for(args.wide), wide=args.wide, whole_reason=True, tenant=True)
        if job.log_tail:
            print(shown_output(job.log_tail.rstrip()))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"szb: usage error: --label {item!r} must be KEY=VALUE", file=sys.stderr)
            return 2
        if not may_be_label_key(key):  # (`=x` listed no job, as if none had the label)
            print(f"szb: usage error: --label {item!r}: {key!r} is not a label key (a label key is "
                  f"{LABEL_KEY_RULE})", file=sys.stderr)
            return 2
        if labels.get(key, value) != value:  # (the filters are one value per key: the last one won)
            print(f"szb: usage error: --label {key} given twice ({labels[key]!r}, {value!r}): "
                  "a job has one value per label", file=sys.stderr)  # fmt: skip
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
                return fail(str(exc))
            jobs.extend(resp.jobs)
            token = resp.next_page_token
            if not token or not args.all:
                break
    if token and not args.all and args.page_size > MAX_PAGE_SIZE:  # (a page the broker's cap cut)
        print(f"szb: only {len(jobs)} jobs are shown: the broker answers at most {MAX_PAGE_SIZE} a page, "
              f"not --page-size {args.page_size}; more exist: --all, or --page-token {token}",
              file=sys.stderr)
    if args.output == "json":
        print(json.dumps({"jobs": [job_dict(j) for j in jobs], "next_page_token": token}, indent=2))
    else:
        print_jobs(jobs, console_for(args.wide), wide=args.wide)
        if token:
            print(f"more: --all, or --page-token {token} for the next page")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            before = state_from_proto(client.get(args.id).job.state)
            job = client.cancel(args.id).job
        except ClientError as exc:
            return fail(str(exc))
    # (Cancelling an ended job is no error: a script may cancel twice.) One that ended since the
    # broker last read it comes back with its own result, not CANCELLED.
    after = state_from_proto(job.state)
    ended = before if before.terminal else after if after.terminal and after != JobState.CANCELLED else None
    if ended is not None:
        print(f"szb: {args.id} had already ended ({ended.value}): nothing cancelled", file=sys.stderr)
    elif not after.terminal:  # (an API replica: the scheduler settles it, or finds the run ended first)
        print(f"szb: cancel of {args.id} requested; `szb watch {args.id}` shows how it ends", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(job_dict(job), indent=2))
    else:
        print_jobs([job], Console())
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
                return fail(str(exc))
            return 0
        try:
            client.get(args.id)
        except ClientError as exc:
            return fail(str(exc))
        # The stream ends with the job; one that ended before (the broker gone) is an error.
        return 0 if _follow(client, args.id, args.after, args.output, console).terminal else 1
