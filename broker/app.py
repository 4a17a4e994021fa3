"""Wire the broker together: store, adapters, policy, dispatcher and the gRPC server."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adapters.base import Adapter
from adapters.registry import AdapterRegistry
from broker.agent_http import AgentHttpServer
from broker.agent_secret import SecretEscrow
from broker.api import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    broker_service_pb2,
    broker_service_pb2_grpc,
    placement_pb2,
)
from broker.audit import AuditTrail
from broker.auth import Principal, TokenAuthority
from broker.burst import explain_json
from broker.burst.money import month_of
from broker.clock import Clock, SystemClock
from broker.config import BrokerConfig, site_settings
from broker.dispatch.dispatcher import Dispatcher
from broker.instrument import RpcMetricsInterceptor, measured
from broker.joblogs import JobLogs
from broker.jobview import JobDetails, job_details
from broker.logs import quiet_third_party
from broker.metrics import BrokerMetrics, LiveCollector, LiveView, MetricsServer, heartbeat_lags
from broker.model import Job, JobSpec, SiteId, TenantId
from broker.offerview import offer_verdicts
from broker.placement import PlacementContext
from broker.planning import Planner
from broker.policy.schema import Limits
from broker.policy.watcher import PolicyLoad
from broker.quota import Quotas, resolve_limits
from broker.reports import spend_report, status_report
from broker.rpc_guard import DecodeGuard
from broker.serde import explanation_to_proto, offers_to_proto, ts_from_proto
from broker.server import AgentServicer, BrokerServicer
from broker.service import BrokerServices, EventHub
from broker.store import JobNotFoundError, JobStore, PolicyVersion, PostgresStore, SqliteStore
from broker.tls import ServerTls, warn_if_plaintext

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024 * 1024


@dataclass
class BrokerApp:
    config: BrokerConfig
    clock: Clock = field(default_factory=SystemClock)
    registry: AdapterRegistry | None = None
    adapter_overrides: Mapping[SiteId, Adapter] | None = None
    """Adapters built by the caller (tests inject endpoints this way), by site id."""

    server: grpc.aio.Server | None = None
    port: int = 0
    metrics_port: int = 0
    """Where `/metrics` is served (0 when `metrics_listen` is not set)."""

    async def start(self) -> int:
        """Start everything; returns the bound port."""
        # Local runners run in their own folders: every path must be absolute from here on.
        self.config = cfg = self.config.absolute()
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.store: JobStore = (
            PostgresStore(cfg.store.dsn)
            if cfg.store is not None
            else SqliteStore(cfg.data_dir / "broker.db", durability=cfg.durability)
        )
        self.store.clock = self.clock
        self.hub = EventHub()
        self.hub.bind(asyncio.get_running_loop())
        self.store.add_listener(self.hub.publish)
        self.metrics = BrokerMetrics()
        self.planner = Planner.load(cfg, self.clock)
        self._policy_loaded(self.planner.watcher.first_load)
        self.planner.watcher.on_load = self._policy_loaded
        self.audit = AuditTrail(
            self.store, lambda: self.planner.policy_hash, lambda: self.planner.watcher.last_refused
        )
        self.adapters = self._build_adapters()
        self.planner.adapters = self.adapters
        host, _, port = cfg.listen.rpartition(":")
        self.dispatcher = Dispatcher(
            self.store,
            self.adapters,
            planner=self.planner,
            clock=self.clock,
            settings=cfg.dispatch,
            metrics=self.metrics,
            escrow=SecretEscrow(cfg.data_dir / "launching"),
        )
        self.services = BrokerServices(
            self.store,
            self.dispatcher,
            self.clock,
            self.hub,
            admit=self.planner.admit,
            grant=self.planner.grant,
            describe=self._describe,
            quotas=Quotas(self._limits),
            joblogs=JobLogs(self.store, self.adapters, cfg.data_dir / "agent-logs"),
        )
        self.tls = ServerTls(cfg.tls) if cfg.tls is not None else None
        self.agent_http: AgentHttpServer | None = None
        if cfg.agent_http_listen:
            self.agent_http = AgentHttpServer(
                self.services,
                asyncio.get_running_loop(),
                cfg.agent_http_listen,
                tls=self.tls,
                max_connections=cfg.agent_http_max_connections,
                timeout_s=cfg.agent_http_timeout_s,
            )
            if self.tls is None:
                warn_if_plaintext(self.agent_http.host, "the agent endpoint")
            self.agent_http.start()
            log.info("agent endpoint on %s", self.agent_http.url)
        self.dispatcher.agent_endpoint = cfg.agent_endpoint or (
            self.agent_http.url if self.agent_http else ""
        )
        if cfg.tls is not None and cfg.tls.agent_ca_file is not None:
            self.dispatcher.agent_ca_pem = cfg.tls.agent_ca_file.read_text()
        server = grpc.aio.server(
            migration_thread_pool=futures.ThreadPoolExecutor(max_workers=4),
            # Metrics see every call; the guard turns undecodable bytes into INVALID_ARGUMENT.
            interceptors=[RpcMetricsInterceptor(self.metrics), DecodeGuard()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.auth = TokenAuthority.from_file(cfg.tokens_file)
        broker_service_pb2_grpc.add_BrokerServiceServicer_to_server(
            BrokerServicer(
                self.services,
                self.auth,
                explain=self._explain_proto,
                spend=self._spend_proto,
                status=self._status_proto,
                audit=self.audit,
                vet=self.planner.vet,
                offers=self._offers_proto,
            ),
            server,
        )
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(self.services), server)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)  # type: ignore[no-untyped-call]
        names = (
            broker_service_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name,
            agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)  # type: ignore[no-untyped-call]
        address = f"{host or '127.0.0.1'}:{port or 0}"
        if self.tls is not None:
            self.port = server.add_secure_port(address, self.tls.grpc_credentials())
        else:
            warn_if_plaintext(host or "127.0.0.1", "the gRPC port")
            self.port = server.add_insecure_port(address)
        await server.start()
        self.server = server
        await self.dispatcher.start()
        for name in names[:2]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.planner.watch(self._policy_changed)
        self._tokens_task: asyncio.Task[None] | None = None
        if cfg.tokens_reload_s > 0:
            self._tokens_task = asyncio.get_running_loop().create_task(self.auth.watch(cfg.tokens_reload_s))
        self.metrics.registry.register(LiveCollector(self._live_view()))
        self.metrics_server: MetricsServer | None = None
        if cfg.metrics_listen:
            self.metrics_server = MetricsServer(
                self.metrics.registry,
                cfg.metrics_listen,
                certfile=str(cfg.tls.cert_file) if cfg.tls else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls else None,
            )
            self.metrics_port = self.metrics_server.port
        log.info(
            "broker listening on %s:%d (%s; data in %s, policy %s)",
            host or "127.0.0.1",
            self.port,
            ("mutual TLS" if cfg.tls.require_client_cert else "TLS") if cfg.tls else "plaintext",
            cfg.data_dir,
            self.planner.policy_hash[:12],
        )
        return self.port

    def _build_adapters(self) -> dict[SiteId, Adapter]:
        registry = self.registry or AdapterRegistry.discover()
        adapters: dict[SiteId, Adapter] = dict(self.adapter_overrides or {})
        for site_id, adapter_name, site_config in self.planner.site_adapters():
            if site_id in adapters:
                continue
            try:
                merged: dict[str, Any] = {
                    "data_dir": str(self.config.data_dir),
                    **site_config,
                    **site_settings(self.config.sites.get(site_id, {})),
                }
                adapters[site_id] = registry.create(adapter_name, site_id, merged)
            except Exception as exc:  # one broken site must not stop the broker
                log.error("site %s disabled: %s", site_id, exc, extra={"site": site_id})
                self.planner.mark_unhealthy(site_id, f"adapter not built: {exc}"[:300])
        quiet_third_party()  # SDKs imported just now may have attached handlers of their own
        return {site: measured(a, self.metrics) for site, a in adapters.items()}

    def _policy_loaded(self, load: PolicyLoad) -> None:
        """Every policy load attempt goes into the audit trail and the reload metrics."""
        self.metrics.policy_reloads.labels(load.result).inc()
        self.metrics.policy_refused.set(1 if load.result == "refused" else 0)
        if load.result == "unchanged":
            return
        self.store.record_policy_version(
            PolicyVersion(load.hash, load.result, load.source, load.content, load.time, load.errors)
        )

    def _live_view(self) -> LiveView:
        planner, store, dispatcher = self.planner, self.store, self.dispatcher

        def money() -> list[tuple[str, float, float | None]]:
            now = self.clock.now()
            used: dict[str, float] = {t.id: 0.0 for t in planner.policy.tenants}
            for e in store.spend_entries(month_of(now)):
                used[e.tenant] = used.get(e.tenant, 0.0) + (e.spent if e.settled else e.reserved)
            return [
                (tenant, cash, planner.money(tenant, now, store).budget_left)
                for tenant, cash in sorted(used.items())
            ]

        return LiveView(
            queue=store.active_counts,
            breakers=lambda: {site: state.value for site, state in planner.breakers.states().items()},
            blocklist_size=lambda: len(planner.blocklist.keys()),
            unhealthy=lambda: {str(site): why for site, why in planner.unhealthy_now().items()},
            money=money,
            heartbeat_lag=lambda: heartbeat_lags(
                store.live_attempts(), dispatcher.heartbeats, self.clock.now(), planner.needs_agent
            ),
            policy_hash=lambda: planner.policy_hash,
            currency=lambda: planner.policy.currency,
        )

    def _policy_changed(self) -> None:
        self.dispatcher.policy_changed()

    def _describe(self, jobs: Sequence[Job]) -> list[JobDetails]:
        """Placement, cost and times of a page of jobs (one query for the times of all)."""
        policy, now = self.planner.policy, self.clock.now()
        times = self.store.run_times([j.id for j in jobs if j.attempts])
        return [
            job_details(
                job,
                self.store.attempts_for(job.id) if job.attempts else [],
                times.get(job.id, (None, None)),
                policy,
                now,
            )
            for job in jobs
        ]

    async def _explain_proto(self, spec: JobSpec, tenant: TenantId) -> placement_pb2.Explanation:
        snap = await self.dispatcher.current_snapshot()
        return explanation_to_proto(explain_json(self.planner.explain(spec, tenant, snap, self.store)))

    async def _offers_proto(
        self, caller: Principal, request: broker_service_pb2.ListOffersRequest
    ) -> broker_service_pb2.ListOffersResponse:
        policy = self.planner.policy
        target = request.tenant or caller.tenant
        asker = policy.tenant(caller.tenant)
        if target != caller.tenant and not caller.is_operator and (asker is None or asker.kind != "internal"):
            raise JobNotFoundError(f"tenant {target!r} not found")
        snap = await self.dispatcher.current_snapshot()
        ctx = PlacementContext(now=snap.now, blocked=snap.blocked, unhealthy_sites=snap.unhealthy)
        verdicts = offer_verdicts(
            snap.offers,
            TenantId(target),
            policy,
            ctx,
            accelerators=list(request.accelerators),
            allowed_only=request.allowed_only,
        )
        return offers_to_proto(verdicts, target, policy.currency, policy.hash)

    def _limits(self, tenant: TenantId) -> Limits:
        """The tenant's quotas under the current policy (a reload applies at once)."""
        policy = self.planner.policy
        declared = policy.tenant(tenant)
        return resolve_limits(policy.document.limits, declared.limits if declared else None)

    def _status_proto(self, caller: Principal) -> broker_service_pb2.GetStatusResponse:
        resp = status_report(
            self.planner,
            self.store,
            self.dispatcher.stats.bursts,
            tenant=caller.tenant,
            operator=caller.is_operator,
            quota=self.services.quota_usage(caller.tenant),
        )
        refused = self.audit.refused_proto()
        if refused is not None and caller.is_operator:  # file paths and errors: operators only
            resp.refused_policy.CopyFrom(refused)
        if caller.is_operator:
            resp.refused_tokens_file.extend(str(p) for p in self.auth.last_problems)
        return resp

    def _spend_proto(
        self, caller: Principal, request: broker_service_pb2.GetSpendRequest
    ) -> broker_service_pb2.GetSpendResponse:
        return spend_report(
            self.planner,
            caller.tenant,
            request.tenant,
            self.store,
            operator=caller.is_operator,
            since=ts_from_proto(request.since) if request.HasField("since") else None,
            until=ts_from_proto(request.until) if request.HasField("until") else None,
            group_by=request.group_by,
        )

    async def stop(self, grace: float = 2.0) -> None:
        if self.server is None:
            return
        await self.health.enter_graceful_shutdown()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.planner.stop_watching()
        if self._tokens_task is not None:
            self._tokens_task.cancel()
        await self.dispatcher.stop()
        await self.server.stop(grace)
        if self.agent_http is not None:
            self.agent_http.stop()
        self.store.close()
        self.server = None


async def serve_forever(config: BrokerConfig) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads the policy and the tokens file."""
    app = BrokerApp(config)
    port = await app.start()
    # Everything loaded so far lives as long as the process: keep the collector off it, so
    # collections stay short under load (they were the largest latency spikes).
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, done.set)
    loop.add_signal_handler(signal.SIGTERM, done.set)

    def reload() -> None:
        app.planner.reload()
        app.auth.reload()

    loop.add_signal_handler(signal.SIGHUP, reload)
    # Ready only once the handlers are in: an early SIGHUP must reload, not kill the broker.
    if app.metrics_server is not None:
        print(f"szb: metrics on {app.metrics_server.url}", flush=True)
    print(f"szb: broker serving on port {port}", flush=True)
    await done.wait()
    await app.stop()
