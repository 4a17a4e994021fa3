"""`szb tls init DIR`: a CA, a server and a client certificate for tests and first deployments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from broker.tlsgen import DEFAULT_HOSTS, write_pki


def register(sub: Any) -> None:
    p = sub.add_parser("tls", help="TLS helpers")
    tls_sub = p.add_subparsers(dest="tls_command", required=True)
    init = tls_sub.add_parser(
        "init",
        help="write ca.pem, server.pem, server-key.pem, client.pem, client-key.pem into DIR",
    )
    init.add_argument("dir", type=Path)
    init.add_argument(
        "--host", action="append", default=[],
        help="name or IP clients use to reach the broker (repeat; default: localhost, 127.0.0.1, ::1)",
    )
    init.add_argument("--client-name", default="szb-client", help="common name of the client certificate")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(handler=cmd_tls_init)


def cmd_tls_init(args: argparse.Namespace) -> int:
    existing = [p for p in ("ca.pem", "server.pem", "server-key.pem") if (args.dir / p).exists()]
    if existing and not args.force:
        where = args.dir / existing[0]
        print(f"szb: error: {where} exists (use --force to replace the set)", file=sys.stderr)
        return 1
    paths = write_pki(args.dir, hosts=args.host or DEFAULT_HOSTS, client_name=args.client_name)
    for what, path in paths.items():
        print(f"{what:12} {path}")
    return 0
