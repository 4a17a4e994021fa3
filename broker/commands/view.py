"""`szb logs JOB [--follow]` and `szb offers`: a job's output, and what can run where."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.markup import escape
from rich.table import Table

from broker.api import broker_service_pb2 as pb
from broker.burst.projection import minutes
from broker.client import ClientError
from broker.commands._args import job_id, tail_bytes
from broker.commands._connect import add_connection_args, client_for
from broker.commands._console import Console
from broker.serde import state_from_proto


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="a job's output (local executor, Slurm, cloud agent)")
    p.add_argument("id", type=job_id)
    p.add_argument("--follow", "-f", action="store_true", help="keep streaming until the job ends")
    p.add_argument(
        "--tail", type=tail_bytes, default=0, metavar="BYTES", help="only the last BYTES of output so far"
    )
    add_connection_args(p)
    p.set_defaults(handler=cmd_logs)

    p = sub.add_parser("offers", help="what can run where, at what price, allowed or not (and why)")
    p.add_argument("--tenant", default="", help="whose view (operators, internal tenants); default yours")
    p.add_argument(
        "--accelerator",
        action="append",
        default=[],
        metavar="X",
        help="only this accelerator (repeatable; `cpu` for CPU-only offers)",
    )
    p.add_argument("--allowed", action="store_true", help="only offers the tenant may use")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    add_connection_args(p)
    p.set_defaults(handler=cmd_offers)


def cmd_logs(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    attempt = ""
    with client_for(args) as client:
        try:
            for resp in client.logs(args.id, follow=args.follow, tail_bytes=args.tail):
                chunk = resp.chunk
                if attempt and chunk.attempt_id != attempt:
                    out.write(f"--- {chunk.attempt_id} ---\n".encode())
                attempt = chunk.attempt_id
                out.write(chunk.data)
                out.flush()
            if not attempt:  # nothing came: say why when the job never started (not a silent job)
                job = client.get(args.id).job
                if not job.attempts:
                    state = state_from_proto(job.state)
                    started = "never started" if state.terminal else "has no attempt yet"
                    print(f"szb: job {job.id} {started} (state {state.value}): it has no output",
                          file=sys.stderr)
        except ClientError as exc:
            print(f"szb: error: {exc}", file=sys.stderr)
            return 1
    return 0


def cmd_offers(args: argparse.Namespace) -> int:
    request = pb.ListOffersRequest(
        tenant=args.tenant, accelerators=args.accelerator, allowed_only=args.allowed
    )
    with client_for(args) as client:
        try:
            resp = client.offers(request)
        except ClientError as exc:
            print(f"szb: error: {exc}", file=sys.stderr)
            return 1
    if args.output == "json":
        print(json.dumps(_offers_json(resp), indent=2))
        return 0
    console = Console() if sys.stdout.isatty() else Console(width=220)
    console.print(_offers_table(resp))
    return 0


def _offers_json(resp: pb.ListOffersResponse) -> dict[str, Any]:
    rows = []
    for o in resp.offers:
        row = MessageToDict(o, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        row["free"] = o.free if o.HasField("free") else None
        rows.append(row)
    return {
        "tenant": resp.tenant,
        "policy_currency": resp.policy_currency,
        "policy_hash": resp.policy_hash,
        "offers": rows,
    }


def _offers_table(resp: pb.ListOffersResponse) -> Table:
    """One row per offer; rejected ones dimmed, with every rule that rejected them."""
    cur = resp.policy_currency
    allowed = sum(1 for o in resp.offers if o.allowed)
    table = Table(
        title=f"Offers for {resp.tenant}: {allowed} of {len(resp.offers)} allowed "
        f"(policy {resp.policy_hash[:12]})"
    )
    for col in (
        "ACCELERATOR",
        "SITE",
        "ZONE",
        "INSTANCE",
        "SPOT",
        "PRICE/H",
        f"PRICE/H ({cur})",
        "FREE",
        "WAIT",
        "ALLOWED",
    ):
        table.add_column(
            col,
            no_wrap=col != "ALLOWED",
            justify="right" if col.startswith("PRICE") or col in ("FREE", "WAIT") else "left",
        )
    for o in resp.offers:
        verdict = "yes" if o.allowed else "no: " + "; ".join(f"[{r.rule}] {r.message}" for r in o.reasons)
        table.add_row(
            escape(f"{o.accelerator}x{o.count}" if o.accelerator else "cpu"),
            escape(o.site),
            escape(o.zone or o.region or "-"),
            escape(o.instance_type),
            "yes" if o.spot else "no",
            f"{o.price_per_hour:,.2f} {o.currency}",
            f"{o.price_per_hour_policy:,.2f}",
            "?" if o.capacity_unknown else str(o.free) if o.HasField("free") else "-",
            "?" if o.capacity_unknown else minutes(o.expected_wait_seconds, "m"),
            escape(verdict),
            style=None if o.allowed else "dim",
        )
    return table
