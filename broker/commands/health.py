"""`szb health`: the broker's gRPC health check (what the container's HEALTHCHECK runs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.commands._args import positive_seconds
from broker.commands._connect import add_connection_args, client_for


def register(sub: Any) -> None:
    p = sub.add_parser("health", help="ask the broker's gRPC health service; exit 0 when SERVING")
    p.add_argument("--service", default="", help="one service (default: the whole server)")
    p.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds to wait for the answer")
    add_connection_args(p)
    p.set_defaults(handler=cmd_health)


def cmd_health(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        stub = health_pb2_grpc.HealthStub(client.channel)  # type: ignore[no-untyped-call]
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"szb: health: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(status)
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1
