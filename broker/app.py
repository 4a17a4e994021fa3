"""Wire the broker together for its role: store, policy, adapters, dispatcher, gRPC edge.

`all` (the default) does everything in one process; `api` serves every RPC and the agent endpoint from
the shared PostgreSQL store, never calling a backend; `scheduler` campaigns to decide and launch alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Loaded at start-up, not inside the first decision that scores many offers as arrays
# (numpy's import and its BLAS thread's spin-up; placement imports it lazily for the CLI).
import broker.placement.vector  # noqa: F401
from adapters._sandbox import Sandbox
from adapters.base import Adapter
from adapters.registry import AdapterRegistry
from broker.agent_http import AgentHttpServer
from broker.agent_rpc import AgentServicer
from broker.agent_secret import SecretEscrow
from broker.audit import AuditTrail
from broker.audit_access import audited_tokens
from broker.bounded import bounded
from broker.clock import Clock, SystemClock
from broker.config import BrokerConfig
from broker.datadir_lock import hold_data_dir, release_data_dir
from broker.dispatch.dispatcher import Dispatcher
from broker.dispatch.reconcile import site_regions, sites_in_use
from broker.drains import SiteDrains
from broker.grpcserve import ON_API_REPLICAS, GrpcEdge
from broker.ha.api import StoreOnlyDispatch
from broker.ha.election import Timing
from broker.ha.logs import SharedJobLogs
from broker.ha.notify import Listener, Note, Notifier
from broker.ha.scheduler import SchedulerRole
from broker.ha.sole import SoleScheduler
from broker.instrument import measured
from broker.joblogs import JobLogs
from broker.logs import quiet_third_party
from broker.metrics import BrokerMetrics, LiveCollector
from broker.metrics_http import MetricsServer
from broker.model import SiteId
from broker.planning import Planner
from broker.policy import Policy
from broker.policy.watcher import PolicyLoad, refused_load
from broker.quota import Quotas
from broker.rpcviews import RpcViews
from broker.secret_files import JobAccount, check_at_start, open_to_jobs
from broker.server import BrokerServicer
from broker.service import BrokerServices, EventHub
from broker.site_adapters import SiteAdapters
from broker.store import LOCK_WAIT_S, JobStore, PolicyVersion, PostgresStore, SqliteStore
from broker.tls import ServerTls, warn_if_plaintext
from broker.token_tenants import watch_token_tenants
from broker.yamlfile import PolicyError, Problem

log = logging.getLogger(__name__)


@dataclass
class BrokerApp:
    config: BrokerConfig
    clock: Clock = field(default_factory=SystemClock)
    registry: AdapterRegistry | None = None
    adapter_overrides: Mapping[SiteId, Adapter] | None = None
    """Adapters built by the caller (tests inject endpoints this way), by site id."""
    config_file: Path | None = None
    """The broker.yaml `config` came from: checked, with the other secret files, at start."""
    job_accounts: tuple[JobAccount, ...] = ()
    """The users sandboxed local jobs run as (none when the broker is not root)."""
    site_builder: SiteAdapters | None = None  # builds site adapters (again after a reload); not on `api`
    edge: GrpcEdge | None = None
    port: int = 0
    metrics_port: int = 0
    """Where `/metrics` is served (0 when `metrics_listen` is not set)."""

    async def start(self) -> int:
        """Start everything the role runs; returns the bound gRPC port."""
        # Local runners run in their own folders: every path must be absolute from here on.
        self.config = cfg = self.config.absolute()
        cfg.check_role()
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir_lock = hold_data_dir(cfg.data_dir) if cfg.role == "all" else None  # (split roles share one)
        self.notifier: Notifier | None = None
        self.listener: Listener | None = None
        self.role: SchedulerRole | None = None
        self.agent_http: AgentHttpServer | None = None
        self.shared_logs: SharedJobLogs | None = None
        self.sole: SoleScheduler | None = None
        self.halted = asyncio.Event()  # set when the process must stop by itself (`halt_reason` says why)
        self.halt_reason = ""
        self._open_store()
        self.tls = ServerTls(cfg.tls) if cfg.tls is not None else None
        self.auth = audited_tokens(cfg.tokens_file, self.store, self.clock, self.metrics.tokens_reloaded)
        self.edge = GrpcEdge(self.metrics, self.planner.policy, self.auth)
        self._check_token_tenants = watch_token_tenants(self.auth, lambda: self.planner.policy)
        await (self._start_scheduler() if cfg.role == "scheduler" else self._start_serving())
        self.planner.watch(self._policy_changed)
        self._tokens_task: asyncio.Task[None] | None = None
        if cfg.tokens_reload_s > 0 and (cfg.role != "scheduler" or cfg.metrics_listen):  # (/metrics reads it)
            self._tokens_task = asyncio.get_running_loop().create_task(self.auth.watch(cfg.tokens_reload_s))
        self._start_metrics()
        log.info(
            "broker (%s) listening on port %d (%s; data in %s, policy %s)", cfg.role, self.port,
            ("mutual TLS" if cfg.tls.require_client_cert else "TLS") if cfg.tls else "plaintext",
            cfg.data_dir, self.planner.policy_hash[:12],
        )
        return self.port

    def _open_store(self) -> None:
        cfg = self.config
        self.store: JobStore = (
            # A scheduler's write waiting on a row holds its lease row: it gives up within half a lease.
            PostgresStore(cfg.store.dsn, lock_wait_s=min(LOCK_WAIT_S, cfg.ha.lease_s / 2))
            if cfg.store is not None
            else SqliteStore(cfg.data_dir / "broker.db", durability=cfg.durability)
        )
        self.store.clock = self.clock
        self.hub = EventHub()
        self.hub.bind(asyncio.get_running_loop())
        self.store.add_listener(self.hub.publish)
        self.metrics = BrokerMetrics()
        try:
            self.planner = Planner.load(cfg, self.clock)
            self.drains = SiteDrains.placing(self.planner, self.store, self.clock)
        except PolicyError as exc:  # "every policy file the broker loads or refuses is stored"
            self._policy_loaded(refused_load(cfg.policy_path(), exc.problems, self.clock.now()))
            raise
        self.planner.on_settled = lambda attempt, state: self.metrics.attempts_ended.labels(
            attempt.site, state.value
        ).inc()
        if cfg.role == "api":  # (the other roles record it once its sites are vetted)
            self._policy_loaded(self.planner.watcher.first_load)
        self.planner.watcher.on_load = self._policy_loaded
        self.audit = AuditTrail(
            self.store, lambda: self.planner.policy, lambda: self.planner.watcher.last_refused
        )
        if cfg.store is not None and cfg.role != "all":
            # Split roles wake each other (new jobs, cancels, agent reports, watchers).
            notifier = self.notifier = Notifier(cfg.store.dsn)
            self.store.add_listener(lambda e: notifier.send({"j": e.job_id, "e": e.kind}))

    def _dispatcher(self, store: JobStore, adapters: Mapping[SiteId, Adapter]) -> Dispatcher:
        cfg = self.config
        dispatcher = Dispatcher(
            store, adapters, planner=self.planner, clock=self.clock, settings=cfg.dispatch,
            metrics=self.metrics, escrow=SecretEscrow(cfg.data_dir / "launching"),
        )
        dispatcher.agent_endpoint = cfg.agent_endpoint or (self.agent_http.url if self.agent_http else "")
        if cfg.tls is not None and cfg.tls.agent_ca_file is not None:
            dispatcher.agent_ca_pem = cfg.tls.agent_ca_file.read_text()
        return dispatcher

    async def _start_serving(self) -> None:
        """Roles `all` and `api`: every RPC, the agent endpoint; `all` also dispatches."""
        cfg = self.config
        if cfg.role == "api":
            self.adapters: dict[SiteId, Adapter] = {}
            self.dispatcher: Any = StoreOnlyDispatch(
                self.store,
                planner=self.planner,
                clock=self.clock,
                notifier=self.notifier,
                snapshot_refresh_s=cfg.ha.snapshot_refresh_s, lease_s=cfg.ha.lease_s,
                adopt=self.planner.adopt_site_report,
                follow=self.planner.fair.follow, queue_window=cfg.dispatch.queue_window,
            )
            self._listen(self._wake_watchers)
        else:
            self.adapters = self._build_adapters()
            if cfg.store is not None:  # PostgreSQL: other processes may dispatch for it too
                self.sole = SoleScheduler(cfg.store.dsn, self.store, Timing(cfg.ha.lease_s, cfg.ha.renew_s))
                self.adapters = await self.sole.take(self.adapters, on_lost=self._halt)
            self.planner.adapters = self.adapters
            self.dispatcher = self._dispatcher(self.store, self.adapters)
        views = RpcViews(self.planner, self.store, self.dispatcher, self.clock, self.audit, self.auth,
                         tls=self.tls)
        views.exposed = lambda: [e.message() for e in open_to_jobs(cfg, self.config_file, self.job_accounts)]
        self.views = views
        self.services = BrokerServices(
            self.store,
            self.dispatcher,
            self.clock,
            self.hub,
            admit=self.planner.admit,
            grant=self.planner.grant,
            describe=views.describe,
            quotas=Quotas(views.limits, version=lambda: self.planner.policy_hash),
            policy_version=lambda: self.planner.policy_version,
            joblogs=self._joblogs(),
            tenants=lambda: [t.id for t in self.planner.policy.tenants],
        )
        views.services = self.services
        self._start_agent_http()
        if cfg.role == "all" and self.agent_http is not None:
            self.dispatcher.agent_endpoint = cfg.agent_endpoint or self.agent_http.url
        assert self.edge is not None
        servicer = BrokerServicer(
            self.services,
            self.auth,
            explain=views.explain_proto,
            spend=views.spend_proto,
            status=views.status_proto,
            audit=self.audit,
            vet=self.planner.vet,
            offers=views.offers_proto, drains=self.drains,
        )
        self.edge.add(servicer, AgentServicer(self.services))
        self.port = await self.edge.bind(cfg.listen, self.tls)
        await self.dispatcher.start()
        await self.edge.serving(store_probe=self.store.leadership)  # (one small row; no policy text)
        self.metrics.registry.register(LiveCollector(views.live_view()))

    def _halt(self, reason: str) -> None:
        log.critical("stopping: %s; another process may dispatch for this database now", reason)
        self.halt_reason = reason
        self.halted.set()

    def _joblogs(self) -> JobLogs:
        folder = self.config.data_dir / "agent-logs"
        if self.config.role == "api" and self.config.store is not None:
            # Any replica may receive an instance's next chunk, and any may be asked to stream it.
            self.shared_logs = SharedJobLogs(
                self.store, self.adapters, folder, self.config.store.dsn, self.planner.needs_agent
            )
            return self.shared_logs
        return JobLogs(self.store, self.adapters, folder, self.planner.needs_agent)

    async def _start_scheduler(self) -> None:
        """Role `scheduler`: health and metrics only; the dispatcher runs while elected."""
        cfg = self.config
        assert cfg.store is not None and self.notifier is not None and self.edge is not None
        self.adapters = self._build_adapters()
        self.planner.adapters = self.adapters
        self.role = SchedulerRole(
            cfg.store.dsn,
            self.store,
            self.adapters,
            self._dispatcher,
            timing=Timing(cfg.ha.lease_s, cfg.ha.renew_s),
            metrics=self.metrics,
            notifier=self.notifier,
            health=self.edge.health,
            report=self.planner.site_report,
        )
        if not cfg.agent_endpoint and any(self.planner.needs_agent(site) for site in self.adapters):
            log.warning(
                "role scheduler without agent_endpoint: cloud instances will not know where to report;"
                " set it to the API replicas' agent address"
            )
        # Offers and capacity are asked of the adapters only through the leader's guard.
        self.planner.adapters = self.role.adapters
        self.edge.add(None, None)
        self.edge.refuse_others(ON_API_REPLICAS)
        self.port = await self.edge.bind(cfg.listen, self.tls)
        await self.edge.serving()
        await self.role.start()

    def _listen(self, deliver: Any) -> None:
        cfg = self.config
        assert cfg.store is not None and self.notifier is not None
        self.listener = Listener(cfg.store.dsn, deliver, ignore_sender=self.notifier.sender)
        self.listener.start()

    def _wake_watchers(self, note: Note) -> None:
        """Another process wrote an event: watchers of that job re-read the store now."""
        attempt_id = note.get("hb")
        if isinstance(attempt_id, str):
            # An agent sticks to one replica: every replica's heartbeat lag must hear it.
            self.dispatcher.heartbeats.beat(attempt_id)
        job_id = note.get("j")
        if isinstance(job_id, str):
            self.hub.wake(job_id)

    def _start_agent_http(self) -> None:
        cfg = self.config
        if not cfg.agent_http_listen:
            return
        self.agent_http = AgentHttpServer(
            self.services,
            asyncio.get_running_loop(),
            cfg.agent_http_listen,
            tls=self.tls,
            max_connections=cfg.agent_http_max_connections,
            max_per_client=cfg.agent_http_max_per_client,
            timeout_s=cfg.agent_http_timeout_s,
        )
        if self.tls is None:
            warn_if_plaintext(self.agent_http.host, "the agent endpoint")
        self.agent_http.start()
        log.info("agent endpoint on %s", self.agent_http.url)

    def _start_metrics(self) -> None:
        cfg = self.config
        self.metrics_server: MetricsServer | None = None
        if cfg.metrics_listen:
            self.metrics_server = MetricsServer(
                self.metrics.registry, cfg.metrics_listen,
                tls=self.tls,
                operator=None if self.auth.dev_mode else self.auth.is_operator_header,
            )
            self.metrics_port = self.metrics_server.port

    def _vet_sites(self, policy: Policy, text: str) -> list[Problem]:
        """A policy may drop a site, or move it to another region, only once no job runs there."""
        sites = site_regions(policy, self.adapter_overrides or {}, self.config.sites)
        return sites_in_use(self.store, sites, str(self.planner.watcher.path), text)

    def _build_adapters(self) -> dict[SiteId, Adapter]:
        # A restart with a policy that dropped a site its live jobs run at is refused, as a reload is.
        self.planner.watcher.vet = self._vet_sites
        first = self.planner.watcher.first_load
        problems = self._vet_sites(self.planner.policy, first.content)
        if problems:
            self._policy_loaded(first.refused(problems))
            raise PolicyError(problems)
        self._policy_loaded(first)
        overrides = dict(self.adapter_overrides or {})
        self.site_builder = SiteAdapters(self.registry or AdapterRegistry.discover(), self.config.data_dir,
                                         self.config.sites, self.planner.mark_unhealthy, skip=set(overrides),
                                         config_file=self.config_file, broker_id=self.store.broker_id())
        adapters = {**overrides, **self.site_builder.build_all(self.planner.policy)}
        quiet_third_party()  # SDKs imported just now may have attached handlers of their own
        boxes = [getattr(a, "sandbox", None) for a in adapters.values()]
        self.job_accounts = tuple(b.user for b in boxes if isinstance(b, Sandbox) and b.user)
        # Before any port is bound: a tenant's job must never run while it could read these.
        check_at_start(self.config, self.config_file, self.job_accounts)
        wait_s = self.config.dispatch.backend_wait_s  # (reads bounded in time; every call measured)
        return {site: measured(bounded(a, wait_s), self.metrics) for site, a in adapters.items()}

    def _policy_loaded(self, load: PolicyLoad) -> None:
        """Every policy load attempt goes into the audit trail and the reload metrics."""
        self.metrics.policy_reloads.labels(load.result).inc()
        self.metrics.policy_refused.set(1 if load.result == "refused" else 0)
        # An unchanged load is kept only where the history's newest entry says otherwise (a refused
        # file mended back to the one in force): the store keeps no entry twice in a row.
        result = "loaded" if load.result == "unchanged" else load.result
        self.store.record_policy_version(PolicyVersion(load.hash, result, load.source, load.content,
                                                       load.time, load.errors, load.inputs, load.files))

    def _policy_changed(self) -> None:
        self._check_token_tenants()  # (a tenant the tokens still name may be gone)
        if self.edge is not None:  # (gRPC's request limit is fixed at the start: a larger one is warned of)
            self.edge.policy_changed(self.planner.policy)
        rebuilt = self.site_builder.changed(self.planner.policy) if self.site_builder is not None else {}
        for site in self.site_builder.reconfigure_onprem(self.planner.policy) if self.site_builder else ():
            self.planner.offers.forget(site)  # its capacity is read again under the new size
        wait_s = self.config.dispatch.backend_wait_s
        for site, adapter in rebuilt.items():  # into the dispatcher's and planner's dict:
            self.adapters[site] = measured(bounded(adapter, wait_s), self.metrics)
            if self.sole is not None:  # (role all on PostgreSQL: calls only while it leads, as at start)
                self.adapters[site] = self.sole.guard(self.adapters[site])
            if self.role is not None:
                self.role.add_adapter(site, self.adapters[site])
            self.planner.offers.forget(site)
        dispatcher = self.role.dispatcher if self.role is not None else self.dispatcher
        if dispatcher is not None:
            dispatcher.policy_changed()

    def reload(self) -> None:
        """SIGHUP: the policy and the tokens file read again, and any site whose secret could not
        be read built again (a file mounted, or a variable set, after the start)."""
        self.planner.reload()
        self.auth.reload()
        if self.site_builder is not None and self.site_builder.unread:
            self._policy_changed()

    async def stop(self, grace: float = 2.0) -> None:
        if self.edge is None:
            return
        edge, self.edge = self.edge, None
        log.info("stopping: health checks now answer NOT_SERVING; running jobs keep running")
        await edge.health.enter_graceful_shutdown()  # (a balancer stops sending calls first)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.planner.stop_watching()
        if self._tokens_task is not None:
            self._tokens_task.cancel()
        if self.role is not None:
            await self.role.stop()
        else:
            await self.dispatcher.stop()
        if self.sole is not None:
            await self.sole.stop()
        await edge.stop(grace)
        if self.agent_http is not None:
            self.agent_http.stop()
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)
        if self.notifier is not None:
            await asyncio.to_thread(self.notifier.close)
        if self.shared_logs is not None:
            self.shared_logs.close()
        self.store.close()
        release_data_dir(self.dir_lock)

