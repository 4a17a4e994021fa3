"""What the RPCs read beyond a job's row: details, explain, offers, quotas, status, spend.

The same in every role that serves RPCs; an `api` replica's dispatcher stand-in answers
snapshots from the catalog alone (no adapter is asked).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.api import broker_service_pb2, placement_pb2
from broker.audit import AuditTrail
from broker.auth import Principal, TokenAuthority
from broker.burst.money import month_of
from broker.clock import Clock
from broker.dispatch.scheduling import ANSWER_WAIT_S
from broker.dispatch.spend import charges
from broker.explain_live import explain_now
from broker.jobview import JobDetails, job_details
from broker.metrics import LiveView, heartbeat_lags
from broker.model import Job, JobSpec, TenantId, others_unnamed
from broker.offerview import offer_verdicts, unread_offers
from broker.placement import PlacementContext
from broker.placement.names import unknown_names
from broker.planning import Planner
from broker.policy.schema_parts import Limits
from broker.quota import tenant_limits
from broker.reports import project_partition_waits, spend_report, status_report
from broker.serde import explanation_to_proto, offers_to_proto, ts_from_proto
from broker.serde_decision import explain_json
from broker.store import JobNotFoundError, JobStore
from broker.tls import ServerTls
from broker.validation import BadRequestError, FieldViolation, did_you_mean


def drained_sites(planner: Planner) -> dict[str, bool]:
    """Each site of the policy in force -> whether it is drained (the gauge shows every site)."""
    drained = planner.health.drained()
    return {str(s.id): s.id in drained for s in planner.policy.sites}


if TYPE_CHECKING:
    from broker.service import BrokerServices


@dataclass
class RpcViews:
    planner: Planner
    store: JobStore
    dispatcher: Any
    """The Dispatcher, or the `api` role's store-only stand-in (same snapshot and stats)."""
    clock: Clock
    audit: AuditTrail
    auth: TokenAuthority | None = None
    tls: ServerTls | None = None
    services: BrokerServices | None = None
    exposed: Callable[[], list[str]] = lambda: []
    """Secret-bearing files the job user can read, with their fix (broker.secret_files)."""

    def live_view(self) -> LiveView:
        planner, store, dispatcher = self.planner, self.store, self.dispatcher

        def money() -> list[tuple[str, float, float | None]]:
            now = self.clock.now()
            used: dict[str, float] = {t.id: 0.0 for t in planner.policy.tenants}
            month = month_of(now)
            for c in charges(store.spend_entries(month), month):
                used[c.tenant] = used.get(c.tenant, 0.0) + c.cash
            return [
                (tenant, cash, planner.money(tenant, now, store).budget_left)
                for tenant, cash in sorted(used.items())
            ]

        return LiveView(
            queue=store.active_counts,
            breakers=planner.health.breaker_states,
            blocklist_size=lambda: len(planner.health.blocked()),
            unhealthy=lambda: {str(site): why for site, why in planner.unhealthy_now().items()},
            money=money,
            heartbeat_lag=lambda: heartbeat_lags(
                store.live_attempts(),
                dispatcher.heartbeats,
                planner.needs_agent,
                dispatcher.started_at,
            ),
            policy_hash=lambda: planner.policy_hash,
            currency=lambda: planner.policy.currency,
            launch_p95=planner.launches.learned,
            fair_share=lambda: planner.fair.shown(planner.policy, self.clock.now()),
            certificate_expiry=lambda: self.tls.expires.timestamp() if self.tls is not None else None,
            drained=lambda: drained_sites(planner),
        )

    def describe(self, jobs: Sequence[Job]) -> list[JobDetails]:
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

    async def explain_proto(
        self, spec: JobSpec, caller: Principal, named: str = "", job: Job | None = None
    ) -> placement_pb2.Explanation:
        """The live decision for `spec` of the `named` tenant (empty: the caller's own); for a
        queued `job`, where it stands (its tenant, as `get` let the caller see it)."""
        tenant = job.tenant if job is not None else self._viewed_tenant(caller, named)
        if job is None and (why := self.planner.grant(spec, tenant)) is not None:  # as a submit would
            raise BadRequestError([FieldViolation("job.priority", why)])
        snap = await self.dispatcher.current_snapshot()
        decision = explain_now(self.planner, spec, tenant, snap, self.store, job)
        policy = self.planner.policy
        unread = unread_offers(policy, snap.offers, snap.unhealthy, snap.capacity_total)
        body = explain_json(decision, spec, policy, unread)
        if not caller.is_operator:  # (whose work a reclaim for it stops is not the tenant's to learn)
            body["decision"] = others_unnamed(body["decision"], tenant)
        return explanation_to_proto({**body, "tenant": tenant})

    async def offers_proto(
        self, caller: Principal, request: broker_service_pb2.ListOffersRequest
    ) -> broker_service_pb2.ListOffersResponse:
        policy = self.planner.policy
        target = self._viewed_tenant(caller, request.tenant)
        if policy.tenant(target) is None:  # (an empty table read as "nothing allowed")
            raise JobNotFoundError(f"tenant {target!r} is not in the policy")
        snap = await self.dispatcher.current_snapshot()
        asked = [(i, a) for i, a in enumerate(request.accelerators) if a.lower() != "cpu"]
        if unknown := unknown_names([a for _, a in asked], policy, snap.offers):
            raise BadRequestError([FieldViolation(f"accelerators[{asked[i][0]}]", why) for i, why in unknown])
        ctx = PlacementContext(
            now=snap.now, blocked=snap.blocked, block_reasons=snap.block_reasons,
            unhealthy_sites=snap.unhealthy, drained_sites=snap.drained,
        )
        unread = unread_offers(policy, snap.offers, snap.unhealthy, snap.capacity_total)
        verdicts = offer_verdicts(
            [o.model_copy(update={"free": None, "expected_wait_s": 0.0}) if o.key in unread else o
             for o in snap.offers],
            TenantId(target),
            policy,
            ctx,
            accelerators=list(request.accelerators),
            allowed_only=request.allowed_only,
            # The money the pass's decisions judge bursts by (`Planner.inputs_for`).
            money=snap.money.get(target) or self.planner.money(target, snap.now, self.store),
        )
        return offers_to_proto(verdicts, target, policy.currency, policy.hash, unread)

    def _viewed_tenant(self, caller: Principal, named: str) -> TenantId:
        """Whose view a caller asks for: operators and internal tenants may name any declared
        tenant, a tenant only itself (another's is "not found", as its jobs are)."""
        policy = self.planner.policy
        if not named or named == caller.tenant:
            return caller.tenant
        asker = policy.tenant(caller.tenant)
        if not caller.is_operator and (asker is None or asker.kind != "internal"):
            raise JobNotFoundError(f"tenant {named!r} not found")
        if policy.tenant(named) is None:
            hint = did_you_mean(named, [t.id for t in policy.tenants])
            raise JobNotFoundError(f"tenant {named!r} is not in the policy{hint}")
        return TenantId(named)

    def limits(self, tenant: TenantId) -> Limits:
        """The tenant's quotas under the current policy (a reload applies at once)."""
        return tenant_limits(self.planner.policy, tenant)

    async def status_proto(self, caller: Principal) -> broker_service_pb2.GetStatusResponse:
        assert self.services is not None
        # The backends are asked in a worker thread; a slow one leaves its last reading in place.
        reading = await self.planner.offers.current(ANSWER_WAIT_S)
        lease_watch = getattr(self.dispatcher, "lease_watch", None)  # (API replicas only)
        resp = status_report(
            self.planner,
            self.store,
            self.dispatcher.stats.bursts,
            tenant=caller.tenant,
            operator=caller.is_operator,
            quota=self.services.quota_usage(caller.tenant),
            reading=reading,
            lease_watch=lease_watch,
        )
        # The wait explain and the decisions use; an API replica shows what the leader read (it runs
        # no dispatcher: no running job's end is known to it).
        if self.planner.policy.burst.wait_model == "projected" and lease_watch is None:
            snap = await self.dispatcher.current_snapshot()
            project_partition_waits(resp, self.planner, snap, self.store)
        refused = self.audit.refused_proto()
        if refused is not None and caller.is_operator:  # file paths and errors: operators only
            resp.refused_policy.CopyFrom(refused)
        if caller.is_operator and self.auth is not None:
            resp.refused_tokens_file.extend(str(p) for p in self.auth.last_problems)
        if caller.is_operator:
            resp.exposed_secret_files.extend(self.exposed())
        if caller.is_operator and self.tls is not None and (notice := self.tls.expiry_notice()):
            body = json.loads(resp.status_json or "{}")
            resp.status_json = json.dumps({**body, "certificate": notice}, default=str)
        return resp

    def spend_proto(
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
