"""`szb drain [SITE] | undrain SITE`: take a site out of service for maintenance, and back."""

from __future__ import annotations

import argparse
import json
from datetime import UTC
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.markup import escape
from rich.table import Table

from broker.api import broker_service_pb2 as pb
from broker.client import ClientError
from broker.commands._connect import add_client_args, client_for
from broker.commands._console import Console
from broker.commands._output import fail


def register(sub: Any) -> None:
    p = sub.add_parser(
        "drain",
        help="operators: take SITE out of service (no new placements; running jobs run to their end); "
        "without SITE, list the drained sites",
    )
    p.add_argument("site", nargs="?", help="a site of the policy (szb status lists them)")
    p.add_argument("--reason", default="", help="why (required with SITE): whoever waits on the site is told")
    add_client_args(p)
    p.set_defaults(handler=cmd_drain)

    p = sub.add_parser("undrain", help="operators: put a drained SITE back in service (placeable at once)")
    p.add_argument("site")
    add_client_args(p)
    p.set_defaults(handler=cmd_undrain)


def when(drain: pb.SiteDrain) -> str:
    return drain.since.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_json(msg: Any) -> str:
    return json.dumps(MessageToDict(msg, preserving_proto_field_name=True), indent=2)


def cmd_drain(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            if args.site is None:
                return _list(client.status().drains, args.output)
            if not args.reason.strip():  # (before the call: the broker would refuse it too)
                return fail("--reason TEXT: say why the site is drained (whoever waits on it is told)")
            resp = client.drain(args.site, args.reason)
        except ClientError as exc:
            return fail(str(exc))
    if args.output == "json":
        print(_as_json(resp))
        return 0
    d = resp.drain
    again = f" (was drained by {escape(resp.replaced.by)}: {escape(resp.replaced.reason)})" if (
        resp.HasField("replaced")) else ""
    console = Console()
    console.print(f"site {escape(d.site)} drained by {escape(d.by)} at {when(d)}{again}", soft_wrap=True)
    console.print(f"  no new placements there; {resp.active_jobs} job(s) there run to their end "
                  f"(szb list --wide shows them; one still pending in its queue is placed again); "
                  f"szb undrain {escape(d.site)} puts it back")
    return 0


def _list(drains: Any, output: str) -> int:
    if output == "json":
        print(json.dumps([MessageToDict(d, preserving_proto_field_name=True) for d in drains], indent=2))
        return 0
    console = Console()
    if not drains:
        console.print("No site is drained")
        return 0
    table = Table(title="Drained sites")
    for col in ("SITE", "BY", "SINCE", "REASON"):
        table.add_column(col, overflow="fold")
    for d in drains:
        table.add_row(escape(d.site), escape(d.by), when(d), escape(d.reason or "-"))
    console.print(table)
    return 0


def cmd_undrain(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        try:
            resp = client.undrain(args.site)
        except ClientError as exc:
            return fail(str(exc))
    if args.output == "json":
        print(_as_json(resp))
        return 0
    console = Console()
    if not resp.HasField("lifted"):
        console.print(f"site {escape(args.site)} was not drained: nothing changed")
        return 0
    lifted = resp.lifted
    console.print(f"site {escape(lifted.site)} back in service (drained by {escape(lifted.by)} since "
                  f"{when(lifted)}): it takes new placements now", soft_wrap=True)
    return 0
