"""How every client command reaches the broker: address, token and TLS flags (or env vars)."""

from __future__ import annotations

import argparse
import os
import sys

from broker.client import DEFAULT_SERVER, BrokerClient
from broker.commands._args import server_address, server_address_or_none
from broker.tls import TlsFileError, is_loopback


def add_connection_args(p: argparse.ArgumentParser, *, server_default: str | None = DEFAULT_SERVER) -> None:
    """--server, --token and the TLS flags, each with its SZB_* environment variable."""
    p.add_argument(
        "--server",
        default=os.environ.get("SZB_SERVER", server_default),
        # (argparse checks a string default too: a bad SZB_SERVER is the same usage error)
        type=server_address if server_default is not None else server_address_or_none,
        help="broker address HOST:PORT (env SZB_SERVER)",
    )
    p.add_argument("--token", default=os.environ.get("SZB_TOKEN"), help="bearer token (env SZB_TOKEN)")
    p.add_argument(
        "--tls-ca", default=os.environ.get("SZB_TLS_CA"),
        help="PEM CA bundle that signed the broker's certificate; turns TLS on (env SZB_TLS_CA)",
    )
    p.add_argument(
        "--tls-cert", default=os.environ.get("SZB_TLS_CERT"),
        help="PEM client certificate for mutual TLS; turns TLS on (env SZB_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key", default=os.environ.get("SZB_TLS_KEY"),
        help="PEM key of --tls-cert (env SZB_TLS_KEY)",
    )



def add_client_args(p: argparse.ArgumentParser) -> None:
    """The connection flags plus `--output table|json`, for commands that print results."""
    add_connection_args(p)
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")

def client_for(args: argparse.Namespace) -> BrokerClient:
    """A client for the parsed flags; TLS when any --tls-* flag (or its env var) is set."""
    tls = bool(args.tls_ca or args.tls_cert or args.tls_key)
    host = str(args.server or "").rpartition(":")[0] or "127.0.0.1"
    if not tls and args.token and not is_loopback(host):
        print(
            f"szb: warning: no TLS to {args.server}: the token crosses the network in clear text "
            "(--tls-ca FILE or SZB_TLS_CA turns TLS on)",
            file=sys.stderr,
        )
    try:
        return BrokerClient(
            args.server, args.token, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key
        )
    except TlsFileError as exc:
        print(f"szb: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
