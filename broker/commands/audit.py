"""`szb audit` and `szb policy history|show`: the operator's audit trail, read from the broker."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.json_format import MessageToDict
from rich.markup import escape
from rich.table import Table

from broker.api import broker_service_pb2 as pb
from broker.audit import DEFAULT_EVENTS, MAX_EVENTS
from broker.client import ClientError
from broker.commands._args import BEIJING, INT32_MAX, job_id, page_size, parse_since
from broker.commands._connect import add_client_args, client_for
from broker.commands._console import Console
from broker.serde import state_from_proto
from broker.validation import did_you_mean


def register(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="who submitted and cancelled what, what the broker decided, and which submissions "
        "policy refused (operators)",
    )
    p.add_argument(
        "--job", type=job_id, default="", help="only this job (refused submissions never became one)"
    )
    p.add_argument("--tenant", default="", help="only this tenant's jobs and refused submissions")
    p.add_argument(
        "--since", type=parse_since, help="a time (2026-12-01, 2026-12-01T08:00+08:00) or an age (2h, 1d)"
    )
    p.add_argument(
        "--until", type=parse_since, help="only events before this time (the same forms as --since)"
    )
    p.add_argument("--limit", type=page_size, default=1000, help="at most this many events, the newest")
    p.add_argument(
        "--page-token", default="", help="the page older than the one that printed this token"
    )
    add_client_args(p)
    p.set_defaults(handler=cmd_audit)


def register_policy(cmds: Any) -> None:
    """`szb policy history` and `szb policy show HASH` (added to the `policy` group)."""
    history = cmds.add_parser("history", help="policy versions the broker loaded or refused (operators)")
    history.add_argument("--limit", type=page_size, default=50)
    add_client_args(history)
    history.set_defaults(handler=cmd_history)
    show = cmds.add_parser("show", help="the text of a stored policy version (operators)")
    show.add_argument("hash", help="the hash or a prefix of at least 4 hex digits")
    show.add_argument("--file", default="", metavar="NAME",
                      help="print a file the policy refers to (accelerators.yaml, a catalog CSV) as loaded")
    add_client_args(show)
    show.set_defaults(handler=cmd_show)


def _ts(value: timestamp_pb2.Timestamp) -> str:
    return (value.ToDatetime(tzinfo=UTC) + BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _run(args: argparse.Namespace, call: Callable[[Any], Any]) -> Any:
    with client_for(args) as client:
        try:
            return call(client)
        except ClientError as exc:
            print(f"szb: error: {exc}", file=sys.stderr)
            return None


def _json(msg: Any) -> None:
    body = MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    print(json.dumps(body, indent=2, ensure_ascii=False))


def _one_more(limit: int) -> int:
    """The page size to ask for: one beyond `limit` tells whether the limit cut anything."""
    return min(limit + 1, INT32_MAX) if limit > 0 else 0


def _say_cut(shown: int, what: str, hint: str) -> None:
    print(f"szb: only the newest {shown} {what} are shown; older ones exist ({hint})", file=sys.stderr)


def cmd_audit(args: argparse.Namespace) -> int:
    # --limit 0 is the broker's default; the broker answers at most MAX_EVENTS whatever is asked.
    limit = min(args.limit if args.limit > 0 else DEFAULT_EVENTS, MAX_EVENTS)
    request = pb.ListAuditEventsRequest(
        job_id=args.job, tenant=args.tenant, page_size=limit, page_token=args.page_token
    )
    if args.since is not None:
        request.since.FromDatetime(args.since)
    if args.until is not None:
        request.until.FromDatetime(args.until)
    resp = _run(args, lambda c: c.audit(request))
    if resp is None:
        return 1
    if resp.next_page_token:
        print(f"szb: only the newest {len(resp.events)} events are shown; older ones exist: raise "
              f"--limit (at most {MAX_EVENTS}), or add --page-token {resp.next_page_token}", file=sys.stderr)
    if args.output == "json":
        _json(resp)
        return 0
    table = Table(title="Audit trail (Beijing time)", show_lines=False)
    for col in ("TIME", "JOB", "TENANT", "EVENT", "BY", "STATE", "POLICY", "WHAT"):
        table.add_column(col, overflow="fold")
    for e in resp.events:
        what = e.message
        if e.price_per_hour:
            what += f" @ {e.price_per_hour:g} {e.currency}/h"
        if e.rule_ids:
            what += f" [rules: {', '.join(e.rule_ids)}]"
        table.add_row(
            _ts(e.time),
            e.job_id,
            e.tenant,
            e.kind,
            e.actor,
            state_from_proto(e.state).value if e.state else "",  # a refusal has no job, no state
            e.policy_hash[:12],
            escape(what),  # rule ids in brackets must survive rich's markup
        )
    Console(width=max(Console().width, 160)).print(table)
    if not resp.events:
        print("no events match", file=sys.stderr)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    resp = _run(args, lambda c: c.policy_versions(_one_more(args.limit)))
    if resp is None:
        return 1
    if 0 < args.limit < len(resp.versions):  # newest first: the one beyond the limit is the last
        del resp.versions[-1]
        _say_cut(args.limit, "policy versions", "raise --limit")
    if args.output == "json":
        _json(resp)
        return 0
    table = Table(title=f"Policy versions (in force: {resp.active_hash[:12]})")
    # FILES: the referenced files' digest: one HASH loaded twice with other files decides otherwise.
    for col in ("TIME", "HASH", "FILES", "RESULT", "SOURCE", "ERRORS"):
        table.add_column(col, overflow="fold")
    for v in resp.versions:
        result = "refused" if v.result == pb.POLICY_LOAD_RESULT_REFUSED else "loaded"
        if v.active:
            result += " (in force)"
        table.add_row(_ts(v.time), v.hash[:12], v.inputs_digest[:12] or "-", result, v.source,
                      escape("\n".join(v.errors)))
    Console(width=max(Console().width, 140)).print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    resp = _run(args, lambda c: c.policy_version(args.hash))
    if resp is None:
        return 1
    if args.output == "json":
        _json(resp)
        return 0
    v = resp.version
    result = "refused" if v.result == pb.POLICY_LOAD_RESULT_REFUSED else "loaded"
    # What it is on stderr: stdout is the file as stored, so its errors' FILE:LINE:COL point into it.
    print(f"# policy {v.hash} ({result}{', in force' if v.active else ''}) from {v.source} at {_ts(v.time)}",
          file=sys.stderr)
    if args.file:
        return _show_file(v, args.file)
    if v.inputs_digest:
        print(f"# the files it refers to: sha256 {v.inputs_digest}", file=sys.stderr)
    for f in v.files:
        print(f"#   {f.name} sha256 {f.sha256} (szb policy show {v.hash[:12]} --file {f.name})",
              file=sys.stderr)
    if v.inputs_digest and not v.files:
        print("#   (their contents were not stored: the entry is older than that)", file=sys.stderr)
    for err in v.errors:
        print(f"# {err}", file=sys.stderr)
    sys.stdout.write(v.content)
    return 0


def _show_file(v: pb.PolicyVersion, name: str) -> int:
    """A referenced file's text as the version loaded it, on stdout (byte for byte)."""
    for f in v.files:
        if f.name == name:
            print(f"# {f.name} of policy {v.hash[:12]}: sha256 {f.sha256}", file=sys.stderr)
            sys.stdout.write(f.content)
            return 0
    if not v.files:
        refused = v.result == pb.POLICY_LOAD_RESULT_REFUSED
        why = "it was refused" if refused else "the entry is older than that"
        print(f"szb: error: policy {v.hash[:12]} stores no files it refers to ({why})", file=sys.stderr)
    else:
        names = [f.name for f in v.files]
        print(f"szb: error: policy {v.hash[:12]} refers to no file {name!r}{did_you_mean(name, names)}; "
              f"it refers to {', '.join(names)}", file=sys.stderr)
    return 1
