"""The gRPC server: interceptors, message limits, services, health, reflection and the port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker.agent_rpc import AgentServicer
from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2, broker_service_pb2_grpc
from broker.auth import TokenAuthority
from broker.auth_gate import AuthGate
from broker.instrument import RpcMetricsInterceptor
from broker.listen import listen_error
from broker.metrics import BrokerMetrics
from broker.policy import Policy
from broker.quota import tenant_limits
from broker.request_bytes import RequestBytes
from broker.rpc_guard import DecodeGuard
from broker.serde import MAX_MESSAGE_BYTES
from broker.server import BrokerServicer
from broker.store_readiness import StoreReadiness
from broker.submit import MAX_BATCH
from broker.tls import ServerTls, warn_if_plaintext

log = logging.getLogger(__name__)

BROKER = broker_service_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name
AGENT = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
ON_API_REPLICAS = (
    "this is a scheduler (role scheduler): it serves health checks only; the broker's API and the"
    " agent endpoint are on the API replicas (szb serve --role api): point --server (SZB_SERVER)"
    " or the agent at one of them"
)
"""Why a scheduler refuses the broker's and the agent's calls."""
BATCH_BYTES = 8 * 1024 * 1024
"""The specs a `SubmitJobs` call may carry in all, when no tenant's `max_spec_bytes` is larger."""
REQUEST_SLACK = MAX_BATCH * 160 + 64 * 1024
"""Bytes a request carries besides its specs: a batch's per-job framing and 128-character client ids."""


def request_limit(policy: Policy) -> int:
    """The largest request `policy` can take: its largest `max_spec_bytes` (or a batch's
    `BATCH_BYTES`) plus slack, at most `MAX_MESSAGE_BYTES`; gRPC refuses larger ones unread."""
    specs = [policy.document.limits.max_spec_bytes]
    specs += [tenant_limits(policy, t.id).max_spec_bytes for t in policy.document.tenants]
    return min(MAX_MESSAGE_BYTES, max(*specs, BATCH_BYTES) + REQUEST_SLACK)


class GrpcEdge:
    """One gRPC server; `broker`/`agent` servicers are left out by roles that do not serve them."""

    def __init__(self, metrics: BrokerMetrics, policy: Policy, auth: TokenAuthority | None = None) -> None:
        # Every request is received whole before any Python code sees it: a limit far above what
        # the policy takes let 30 callers of 25 MB requests take the broker from 110 MB to 1.5 GB.
        self.request_limit = request_limit(policy)
        self.gate = None if auth is None else AuthGate(auth, BROKER)  # (no request decoded before it)
        self.server = grpc.aio.server(
            migration_thread_pool=futures.ThreadPoolExecutor(max_workers=4),
            # Metrics see every call; the guard turns undecodable bytes into INVALID_ARGUMENT.
            # The guard also decodes at most twice the request limit of large requests at once.
            interceptors=[
                RpcMetricsInterceptor(metrics), *([self.gate] if self.gate else []),
                DecodeGuard(RequestBytes(2 * self.request_limit)),
            ],
            options=[
                ("grpc.max_receive_message_length", self.request_limit),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # gRPC shares a port by default (SO_REUSEPORT): a second broker started on the
                # same address would get half the connections, with its own store behind them.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)  # type: ignore[no-untyped-call]
        self.names: list[str] = []
        self._readiness: asyncio.Task[None] | None = None

    def policy_changed(self, policy: Policy) -> None:
        """Warn when a reloaded policy takes requests larger than this server, started under an
        earlier one, receives (gRPC's limit is fixed at the start)."""
        wanted = request_limit(policy)
        if wanted > self.request_limit:
            log.warning(
                "the policy now takes requests of up to %d bytes (its largest max_spec_bytes plus slack);"
                " this broker receives at most %d until it is restarted", wanted, self.request_limit,
            )

    def add(self, broker: BrokerServicer | None, agent: AgentServicer | None) -> None:
        if broker is not None:
            broker_service_pb2_grpc.add_BrokerServiceServicer_to_server(broker, self.server)
            self.names.append(BROKER)
            if self.gate is not None:  # (a scheduler's refusal says where to go, whoever asks)
                self.gate.enabled = True
        if agent is not None:
            agent_service_pb2_grpc.add_AgentServiceServicer_to_server(agent, self.server)
            self.names.append(AGENT)
        names = (*self.names, HEALTH, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)  # type: ignore[no-untyped-call]

    def refuse_others(self, why: str) -> None:
        """Answer every call of the services left out with UNIMPLEMENTED and `why` (where to
        go instead), not gRPC's bare 'Method not found!'."""
        left_out = [
            service.DESCRIPTOR.services_by_name[name]
            for service, name in ((broker_service_pb2, "BrokerService"), (agent_service_pb2, "AgentService"))
            if service.DESCRIPTOR.services_by_name[name].full_name not in self.names
        ]
        self.server.add_generic_rpc_handlers([_refusing(service, why) for service in left_out])

    async def bind(self, listen: str, tls: ServerTls | None) -> int:
        """Listen on HOST:PORT (TLS when given); returns the bound port."""
        host, _, port = listen.rpartition(":")
        address = f"{host or '127.0.0.1'}:{port or 0}"
        try:
            if tls is not None:
                bound = self.server.add_secure_port(address, tls.grpc_credentials())
            else:
                warn_if_plaintext(host or "127.0.0.1", "the gRPC port")
                bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc says only "Failed to bind to address"
            raise listen_error(address, "listen") from exc
        if not bound:
            raise listen_error(address, "listen")
        await self.server.start()
        return bound

    async def serving(
        self, extra: Sequence[str] = (), store_probe: Callable[[], object] | None = None
    ) -> None:
        """Every service SERVING; with `store_probe`, the broker's and the agent's follow the store."""
        for name in (*self.names, *extra):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        if store_probe is not None and self.names:
            readiness = StoreReadiness(store_probe, self._store_ready)
            self._readiness = asyncio.get_running_loop().create_task(readiness.run())

    async def _store_ready(self, ready: bool) -> None:
        answer = health_pb2.HealthCheckResponse
        status = answer.SERVING if ready else answer.NOT_SERVING
        for name in self.names:
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        if self._readiness is not None:
            self._readiness.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


_HANDLERS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _refusing(service: ServiceDescriptor, why: str) -> grpc.GenericRpcHandler:
    """A handler for every method of `service` that aborts with UNIMPLEMENTED and `why`."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, why)

    return grpc.method_handlers_generic_handler(
        service.full_name,
        {m.name: _HANDLERS[(m.client_streaming, m.server_streaming)](refuse) for m in service.methods},
    )
