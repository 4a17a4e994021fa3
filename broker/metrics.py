"""Prometheus metrics of one broker: counters bumped where things happen, gauges read at scrape.

Each broker owns its `CollectorRegistry` (never the process-global one), so several brokers in
one process (tests, the simulator) keep separate numbers. `/metrics` is served from it on
`metrics_listen` by `broker.metrics_http`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.fairshare.standing import TenantStanding
from broker.heard import Heard
from broker.model import Attempt
from broker.store import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ADAPTER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BrokerMetrics:
    """The broker's event counters and latency histograms, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._dispatch_metrics(self.registry)
        self._call_metrics(self.registry)
        self._policy_metrics(self.registry)

    def _dispatch_metrics(self, r: CollectorRegistry) -> None:
        """What the dispatcher decides and starts, and how long deciding takes."""
        self.decisions = Counter(
            "szb_decisions",
            "Decisions taken for queued jobs, by action (run, wait, reject); a waiting job is decided "
            "again at later passes and counts each time.",
            ["action"],
            registry=r,
        )
        self.bursts = Counter(
            "szb_bursts",
            "Jobs that burst: once per burst decision whose launch started, by the cloud site it "
            "started at (a launch the cloud refused is a failover, not a burst).",
            ["site"],
            registry=r,
        )
        self.failovers = Counter(
            "szb_failovers",
            "Failed attempts after which the job moved on (next offer or retry), by site and error class.",
            ["site", "error"],
            registry=r,
        )
        self.attempts = Counter(
            "szb_attempts", "Attempts begun at a site (a launch it refused included), by site.", ["site"],
            registry=r,
        )
        self.attempts_ended = Counter(
            "szb_attempts_ended",
            "Attempts that ended, by site and state (SUCCEEDED, FAILED, CANCELLED, PREEMPTED, LOST).",
            ["site", "state"],
            registry=r,
        )
        self.reclaim_lost = Counter(
            "szb_reclaim_lost_unit_seconds",
            "Work fair-share reclaim preemptions lost (accelerator-unit seconds since the victim's last "
            "checkpoint, its start without one), by site and the victim's tenant.",
            ["site", "tenant"],
            registry=r,
        )
        self.placement_seconds = Histogram(
            "szb_placement_seconds",
            "Time to decide one queued job (placement + burst decision).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dispatch_pass_seconds = Histogram(
            "szb_dispatch_pass_seconds",
            "Time of one dispatch pass over the queue.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def _call_metrics(self, r: CollectorRegistry) -> None:
        """gRPC calls handled and backend calls made: counts, errors, durations."""
        self.rpc_seconds = Histogram(
            "szb_rpc_duration_seconds",
            "gRPC handling time, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rpcs = Counter(
            "szb_rpcs", "gRPC calls handled, by method and status code.", ["method", "code"], registry=r
        )
        self.adapter_calls = Counter(
            "szb_adapter_calls", "Calls to a site's backend, by site and call.", ["site", "call"], registry=r
        )
        self.adapter_errors = Counter(
            "szb_adapter_errors",
            "Failed backend calls, by site, call and error class.",
            ["site", "call", "error"],
            registry=r,
        )
        self.adapter_seconds = Histogram(
            "szb_adapter_call_seconds",
            "Backend call time, by site and call.",
            ["site", "call"],
            buckets=ADAPTER_BUCKETS,
            registry=r,
        )

    def _policy_metrics(self, r: CollectorRegistry) -> None:
        """Policy and tokens file reloads, and whether the policy on disk is refused."""
        self.policy_reloads = Counter(
            "szb_policy_reloads",
            "Policy (re)loads, by result (loaded, unchanged, refused).",
            ["result"],
            registry=r,
        )
        self.policy_refused = Gauge(
            "szb_policy_refused", "1 while the policy file on disk is invalid and was refused.", registry=r
        )
        self.tokens_reloads = Counter(
            "szb_tokens_reloads",
            "Tokens file reloads, by result (loaded, unchanged, refused).",
            ["result"],
            registry=r,
        )

    def tokens_reloaded(self, result: str) -> None:
        """Count one tokens file reload (`TokenAuthority.on_reload`)."""
        self.tokens_reloads.labels(result).inc()


@dataclass(frozen=True)
class LiveView:
    """Functions the scrape-time collector reads the broker's state through."""

    queue: Callable[[], Mapping[tuple[str, str, str], int]]
    """(state, site, tenant) -> number of non-terminal jobs."""
    breakers: Callable[[], Mapping[str, str]]
    """site -> breaker state (closed, open, half_open)."""
    blocklist_size: Callable[[], int]
    unhealthy: Callable[[], Mapping[str, str]]
    """site -> why it is out of service."""
    money: Callable[[], Iterable[tuple[str, float, float | None]]]
    """(tenant, cash spent and reserved this month, budget left or None)."""
    heartbeat_lag: Callable[[], Mapping[str, float]]
    """site -> seconds since the stalest live attempt there reported."""
    policy_hash: Callable[[], str]
    currency: Callable[[], str]
    launch_p95: Callable[[], Mapping[str, float]] = dict
    """site -> p95 seconds its launches took to come up, once it has enough of them."""
    fair_share: Callable[[], Iterable[TenantStanding]] = list
    """Each tenant's fair-share standing and quota use (`broker.fairshare.standing`)."""
    certificate_expiry: Callable[[], float | None] = lambda: None
    """When the server certificate in use expires (Unix seconds; None: no TLS)."""
    drained: Callable[[], Mapping[str, bool]] = dict
    """Each site of the policy -> whether an operator drained it (`szb drain`)."""


BREAKER_STATES = ("closed", "open", "half_open")
TROUBLE_KINDS = ("adapter not built", "capacity unavailable", "circuit open", "unreachable",
                 "cannot terminate its instances")
"""How the broker's own reasons for a sick site begin (broker.dispatch.health, offers, app)."""


def trouble_kind(reason: str) -> str:
    """A bounded label for why a site is out of service: its kind, or the error class, never
    the provider's text (a new series per text, and words meant for operators only)."""
    kind = next((k for k in TROUBLE_KINDS if reason.startswith(k)), None)
    if kind is not None:
        return kind
    head = reason.split(":", 1)[0].split(" ", 1)[0]
    return head if head.isidentifier() and head.endswith("Error") else "other"


class _StoreReads:
    """Reads of the store for one scrape: one it cannot answer leaves its family empty (a 500
    would leave Prometheus with nothing at all, not even that the store is away)."""

    def __init__(self) -> None:
        self.ok = True

    def __call__(self, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except StoreError:
            self.ok = False
            return None


class LiveCollector(Collector):
    """Gauges computed from the broker's state at each scrape (queue, breakers, money...)."""

    def __init__(self, view: LiveView) -> None:
        self.view = view

    def collect(self) -> Iterable[Metric]:
        v = self.view
        read = _StoreReads()
        queue = GaugeMetricFamily(
            "szb_queue_jobs",
            "Jobs not yet finished, by state, site and tenant.",
            labels=["state", "site", "tenant"],
        )
        for (state, site, tenant), n in sorted((read(v.queue) or {}).items()):
            queue.add_metric([state, site, tenant], n)
        yield queue
        breakers = GaugeMetricFamily(
            "szb_breaker_state",
            "Circuit breaker of each site: 1 for its current state.",
            labels=["site", "state"],
        )
        for site, state in sorted(v.breakers().items()):
            for name in BREAKER_STATES:
                breakers.add_metric([site, name], 1.0 if state == name else 0.0)
        yield breakers
        yield GaugeMetricFamily(
            "szb_blocklist_entries",
            "Blocked (site, zone, type) and region entries in force.",
            value=v.blocklist_size(),
        )
        unhealthy = GaugeMetricFamily(
            "szb_site_unhealthy",
            "1 for each site out of service, with the kind of trouble (the full text: szb status).",
            labels=["site", "reason"],
        )
        for site, reason in sorted(v.unhealthy().items()):
            unhealthy.add_metric([site, trouble_kind(reason)], 1.0)
        yield unhealthy
        drained = GaugeMetricFamily(
            "szb_site_drained",
            "1 for each site an operator drained (no new placements; szb status says who and why), "
            "0 for the policy's other sites.",
            labels=["site"],
        )
        for site, out in sorted(v.drained().items()):
            drained.add_metric([site], 1.0 if out else 0.0)
        yield drained
        yield from self._money(read)
        yield from self._routes(read)
        info = GaugeMetricFamily("szb_policy_info", "The policy in force (its hash).", labels=["hash"])
        info.add_metric([v.policy_hash()], 1.0)
        yield info
        if (expires := v.certificate_expiry()) is not None:  # (alert on it minus time(); absent without TLS)
            yield GaugeMetricFamily(
                "szb_tls_certificate_expiry_timestamp_seconds",
                "When the server certificate in use expires (Unix time).",
                value=expires,
            )
        yield GaugeMetricFamily(
            "szb_store_up",
            "1 when this scrape could read the store; 0 while it cannot (a database restarting): "
            "the families read from it are then empty.",
            value=1.0 if read.ok else 0.0,
        )

    def _money(self, read: _StoreReads) -> Iterable[Metric]:
        v = self.view
        currency = v.currency()
        spend = GaugeMetricFamily(
            "szb_spend_month",
            "Cash spent plus reserved this month, by tenant (policy currency).",
            labels=["tenant", "currency"],
        )
        left = GaugeMetricFamily(
            "szb_budget_left",
            "Monthly burst budget left, by tenant (tenants with a budget only).",
            labels=["tenant", "currency"],
        )
        for tenant, used, budget_left in read(lambda: list(v.money())) or []:
            spend.add_metric([tenant, currency], used)
            if budget_left is not None:
                left.add_metric([tenant, currency], budget_left)
        yield spend
        yield left

    def _routes(self, read: _StoreReads) -> Iterable[Metric]:
        v = self.view
        lag = GaugeMetricFamily(
            "szb_heartbeat_lag_seconds",
            "Seconds since the stalest live cloud attempt reported, by site.",
            labels=["site"],
        )
        for site, seconds in sorted((read(v.heartbeat_lag) or {}).items()):
            lag.add_metric([site], seconds)
        yield lag
        launches = GaugeMetricFamily(
            "szb_route_provisioning_p95_seconds",
            "The p95 of each cloud route's newest launches, creation to running (a late job's "
            "burst lead is the larger of it and the policy's provisioning_p95).",
            labels=["site"],
        )
        for site, seconds in sorted(v.launch_p95().items()):
            launches.add_metric([site], seconds)
        yield launches
        yield from self._fair_share()

    def _fair_share(self) -> Iterable[Metric]:
        ratio = GaugeMetricFamily(
            "szb_fair_share_ratio",
            "Each active tenant's on-prem use over its entitled share (1 = exactly fair).",
            labels=["tenant"],
        )
        quota = GaugeMetricFamily(
            "szb_quota_units",
            "A tenant's units on an on-prem partition: guaranteed, in_use, borrowed (beyond the guarantee).",
            labels=["tenant", "partition", "kind"],
        )
        for s in self.view.fair_share():
            if s.ratio is not None:
                ratio.add_metric([s.tenant], s.ratio)
            for q in s.quotas:
                kinds = (("guaranteed", q.guaranteed), ("in_use", q.in_use), ("borrowed", q.borrowed))
                for kind, units in kinds:
                    quota.add_metric([s.tenant, q.partition, kind], float(units))
        yield ratio
        yield quota


def heartbeat_lags(
    live: Iterable[Attempt], heartbeats: Heard, cloud: Callable[[str], bool], since: datetime
) -> dict[str, float]:
    """site -> max seconds since a live cloud attempt last reported (since it started when never).

    `since`: when this broker began listening for them; what an instance said before is unknown
    (the heartbeat timeout counts from there too), so a restart does not show days of silence."""
    out: dict[str, float] = {}
    for attempt in live:
        if not cloud(attempt.site) or attempt.backend_id is None:
            continue
        lag = heartbeats.silent_s(attempt, since)
        out[attempt.site] = max(out.get(attempt.site, 0.0), lag)
    return out
