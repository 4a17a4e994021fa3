"""The shell around the pure decision core: policy, site health, offers, money and fair share.

The dispatcher asks it for a `PassSnapshot` once per pass and a `Decision` per queued job;
`explain` and admission use the very same `broker.burst.decide`. Its parts: `SiteHealth`,
`OfferSource` (adapters asked off the event loop), `SpendLedger` (money), `FairQueue`."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from adapters.base import Adapter, AdapterError, Capability, supports
from broker.burst import BurstInputs, TenantMoney, is_onprem, route_states
from broker.burst.provisioning import ProvisioningTimes
from broker.burst.snapshot import PassSnapshot, partition_key
from broker.burst.spot import ADMISSION_FIELDS
from broker.burst.step import build_inputs, decide_in_pass
from broker.clock import Clock
from broker.config import BrokerConfig
from broker.decision import Decision
from broker.dispatch.contract import FailoverPlan, failover_plan
from broker.dispatch.failover import NextStep
from broker.dispatch.health import SiteHealth
from broker.dispatch.launch_history import read_launch_times
from broker.dispatch.offers import OfferReading, OfferSource, ended_attempts, started_attempts
from broker.dispatch.own_refusals import RefusalMemo, excluding_refusals
from broker.dispatch.spend import SpendLedger
from broker.dispatch.spot_limit import off_spot, without_spot
from broker.dispatch.tenant_gone import kept_waiting
from broker.dispatch.waits import LiveWaits
from broker.fair_queue import FairQueue
from broker.fair_reclaim import Reclaimer
from broker.fairshare import BatchIdentity, batch_account, held_back, priority_refusal
from broker.fairshare.book import units_of
from broker.fairshare.holds import claimed_meanwhile
from broker.jobspec import SpotMode
from broker.model import Attempt, AttemptState, AttemptStatus, Job, JobSpec, Offer, SiteId, TenantId
from broker.pending_bursts import PendingBursts
from broker.placement import PlacementContext, place
from broker.placement._env import Env
from broker.placement.names import unknown_accelerators
from broker.placement.refusal import refusal_summary
from broker.policy import Policy, PolicyWatcher
from broker.quota_bar import bar_onprem, never_runs, waiting_for_quota
from broker.sitereport import SiteReport
from broker.store import JobStore
from broker.validation import FieldViolation

RECENT_ATTEMPTS = 500


class Planner:
    def __init__(self, watcher: PolicyWatcher, clock: Clock) -> None:
        self.watcher = watcher
        self.clock = clock
        self.health = SiteHealth(lambda: self.policy, clock)
        self.offers = OfferSource(lambda: self.policy, clock, self.health)
        self.ledger = SpendLedger(lambda: self.policy, clock)
        self.recent: deque[Attempt] = deque(maxlen=RECENT_ATTEMPTS)
        self.refusals = RefusalMemo()  # sites that refused a job's own request, per attempt count
        self.launches = ProvisioningTimes()
        """Each cloud route's launch times: a late job's lead counts their p95 (`burst.leads`)."""
        self.pending_burst = PendingBursts(clock.ticks)
        self.burst_jobs: set[str] = set()
        """Jobs that already burst once: failover to the next cloud offer skips the hysteresis."""
        self._watch_task: asyncio.Task[None] | None = None
        self._admitted: dict[tuple[str, str, str, bool], list[str]] = {}
        self.fair = FairQueue(clock.ticks)
        """Fair share across tenants: the usage book and each queued job's standing."""
        self.waits = LiveWaits()
        """Projected on-prem waits (`burst.wait_model: projected`): what each job has ahead."""
        self.on_settled: Callable[[Attempt, AttemptState], None] = lambda attempt, state: None
        """Told of every attempt's end (the broker counts them in its metrics)."""

    @classmethod
    def load(cls, config: BrokerConfig, clock: Clock) -> Planner:
        return cls(PolicyWatcher(config.policy_path()), clock)

    @property
    def policy(self) -> Policy:
        return self.watcher.current

    @property
    def policy_hash(self) -> str:
        return self.policy.hash

    @property
    def policy_version(self) -> str:
        """The policy and the files it refers to (`Policy.version`): what cached answers are kept per."""
        return self.policy.version

    @property
    def adapters(self) -> Mapping[SiteId, Adapter]:
        return self.offers.adapters

    @adapters.setter
    def adapters(self, adapters: Mapping[SiteId, Adapter]) -> None:
        self.offers.adapters = adapters

    # Policy reload ---------------------------------------------------------------------

    def watch(self, on_change: Callable[[], None]) -> None:
        self.watcher._on_swap = lambda _p: on_change()
        self._watch_task = asyncio.get_running_loop().create_task(self.watcher.watch(1.0))

    def stop_watching(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()

    def reload(self) -> None:
        """SIGHUP: reload now (a bad file is refused and logged inside the watcher)."""
        self.watcher.reload()

    # Sites and their health ------------------------------------------------------------

    def mark_unhealthy(self, site: SiteId, reason: str) -> None:
        self.health.mark_unhealthy(site, reason)

    def mark_unreachable(self, site: SiteId, reason: str) -> None:
        """Reconciliation could not list the site: no new work goes there until it answers."""
        self.health.mark_unreachable(site, reason)

    def mark_reachable(self, site: SiteId) -> None:
        self.health.mark_reachable(site)

    def site_report(self, bursts: Sequence[datetime], now: datetime) -> SiteReport:
        """What only the process that asks the backends knows of its sites (replicas show it)."""
        reading = self.offers.latest()
        return replace(
            self.health.report(list(bursts), now),
            onprem=tuple(o for o in reading.offers if is_onprem(self.policy, o.site)),
            totals=dict(reading.totals),
            read_at=reading.read_at,
            fair_share=tuple(self.fair.shown(self.policy, now)),
        )

    def adopt_site_report(self, report: SiteReport) -> None:
        """On an `api` replica: the active scheduler's view of the sites becomes this one's."""
        self.health.adopted = report
        self.fair.adopted = report.fair_share
        if report.read_at is not None:
            self.offers.adopt(OfferReading(list(report.onprem), dict(report.totals), report.read_at))

    def unhealthy_now(self) -> dict[SiteId, str]:
        return self.health.unhealthy_now()
    def failover(self) -> FailoverPlan:
        return failover_plan(self.policy)

    def record_failure(self, attempt: Attempt, error: AdapterError) -> NextStep:
        """Block what the error says to block; auth/config errors open the site's breaker."""
        return self.health.record_failure(attempt, error)

    def begin_trial(self, site: SiteId) -> str | None:
        """A launch goes to `site`: its breaker's trial when half-open (why others wait), else None."""
        return self.health.begin_trial(site)

    def record_success(self, attempt: Attempt) -> None:
        self.health.record_success(attempt)
        if not is_onprem(self.policy, attempt.site):
            self.burst_jobs.add(attempt.job_id)

    def record_preemption(self, attempt: Attempt) -> None:
        """Spot recovery: the region that preempted the job is blocked for the next try."""
        self.health.record_preemption(attempt)

    def needs_agent(self, site: str) -> bool:
        """Cloud attempts report through AgentService; on-prem backends report themselves."""
        return not is_onprem(self.policy, site)

    def queueing_sites(self) -> frozenset[str]:
        """On-prem sites whose backend keeps a queue of its own (jobs may pend there)."""
        return frozenset(site for site, a in self.adapters.items() if supports(a, Capability.QUEUES_JOBS))

    # Snapshots and decisions -------------------------------------------------------------

    def catalog_offers(self) -> list[Offer]:
        """The policy's static offers, built once per policy (priced when the policy was read)."""
        return self.offers.catalog()

    async def read_snapshot(
        self, now: datetime, live: Sequence[Attempt], *, wait_s: float | None
    ) -> PassSnapshot:
        """A snapshot on a fresh offer reading (adapters asked in a worker thread).

        `wait_s` None waits for the backends however long they take (the dispatcher); else the
        last reading is used when they do not answer in time (explain, offers).
        """
        reading = await (self.offers.fresh() if wait_s is None else self.offers.current(wait_s))
        return self.snapshot(now, live, reading)

    def snapshot(
        self, now: datetime, live: Sequence[Attempt], reading: OfferReading | None = None
    ) -> PassSnapshot:
        """Everything one dispatch pass decides on, from an offer reading (the last one by default)."""
        reading = reading or self.offers.latest()
        snap = PassSnapshot(
            now=now,
            offers=reading.offers,
            capacity_total=reading.totals,
            routes=route_states([*live, *self.recent], now, self.policy, self.launches.learned()),
            blocked=self.health.blocked(), block_reasons=self.health.blocklist.reasons(),
            unhealthy=self.health.unhealthy_now(), no_images=self.offers.no_images(),
            drained=self.health.drained(),
        )
        snap.started = started_attempts(reading, live)
        snap.ended = ended_attempts(reading, live)
        for attempt in live:  # launches still in flight are not in the adapter's capacity yet
            offer = attempt.offer
            if attempt.backend_id is None and offer.accelerator and is_onprem(self.policy, attempt.site):
                key = partition_key(attempt.offer)
                snap.claimed[key] = snap.claimed.get(key, 0) + attempt.offer.count
        if self.policy.burst.wait_model == "projected":
            self.waits.noted(snap, live)
        return snap

    def money(self, tenant: str, now: datetime, store: JobStore) -> TenantMoney:
        return self.ledger.money(tenant, now, store)

    def budget(self, tenant: str) -> float | None:
        """The tenant's monthly burst budget (its own, else the policy default; None = no limit)."""
        return self.ledger.budget(tenant)

    def inputs_for(
        self,
        tenant: TenantId,
        snap: PassSnapshot,
        store: JobStore,
        *,
        queued_since: datetime,
        pending_since: datetime | None,
        projected_wait: dict[str, float] | None = None,
        launches_ahead: Mapping[SiteId, int] | None = None,
    ) -> BurstInputs:
        """A job's decision inputs: the pass's money for the tenant (read once per pass and after
        each of its bursts), then the one pure builder the simulator uses too (`build_inputs`)."""
        money = snap.money.get(tenant)
        if money is None:
            money = snap.money[tenant] = self.money(tenant, snap.now, store)
        gap = self.policy.burst.firm_deadline_share_gap
        return build_inputs(
            snap,
            queued_since=queued_since,
            money=money,
            pending_since=pending_since,
            queueing_sites=self.queueing_sites(),
            projected_wait=projected_wait,
            launches_ahead=launches_ahead,
            # Fair share owes the tenant what a far-over-share tenant holds: its max_wait is firm.
            firm_deadline=held_back(self.fair.ratios, tenant, gap),
            late_claims=self.waits.claims.view(self.fair.ratios, tenant, gap),  # one may take what frees
            # (projected waits learn it; the fluid model reads no history, as in the simulator)
            runtime_ratio=1.0 if projected_wait is None else self.waits.ratios.ratio(tenant, store, snap.now),
        )

    def decide(self, job: Job, snap: PassSnapshot, store: JobStore) -> Decision:
        # A job that already burst fails over without waiting out the hysteresis again.
        pending = job.created_at if job.id in self.burst_jobs else self.pending_burst.get(job.id, snap.now)
        spec = job.spec
        if spec.spot == SpotMode.ALLOWED and off_spot(job, self.policy, store):
            spec = without_spot(spec)  # interrupted enough times
        if self.fair.over_share(self.policy, job):
            # Far over its share: the job does not wait on-prem behind others for its max_wait.
            spec = spec.model_copy(update={"max_wait": timedelta(0)})
        held = self.fair.held_for(self.policy, job, snap.now)  # kept for a waiting job ahead
        self.waits.claims.put(job.id, None)  # its own late claim is no reason to yield
        # A new job decided before the next full pass counts the waiters before its place in the
        # queue its pass ranked (the last whole one and the jobs decided since), as explain does;
        # in a full pass, those decided before it.
        new = self.fair.provisional.get(job.id)
        before = new.position if new is not None and job.id not in self.fair.standings else None
        projected = self.waits.for_job(self.policy, spec, snap, store, self.queueing_sites(), before)
        barred = self.fair.barred(self.policy, job, snap.now)  # beyond a quota it may not borrow past
        held, projected = bar_onprem(barred, held, projected)  # it waits for its own quota to free
        ahead = self.waits.launches_ahead(self.policy, spec, job.tenant, job.created_at, job.id)
        with claimed_meanwhile(snap.claimed, held):
            inputs = self.inputs_for(
                job.tenant, snap, store, queued_since=job.created_at, pending_since=pending,
                projected_wait=projected, launches_ahead=ahead,
            )
            inputs = excluding_refusals(inputs, job, store, self.refusals)
            # The same step the simulator takes (broker.burst.step): inputs, decide, claim/enqueue.
            decision = decide_in_pass(spec, job.tenant, snap, self.policy, inputs)
        if barred is not None:
            decision = waiting_for_quota(self.policy, job.tenant, units_of(spec), decision)
        decision = kept_waiting(self.policy, job.tenant, spec, decision, snap.now)
        decision = self.fair.adjust(self.policy, job, decision, snap)
        if projected is not None:  # recorded with where its wait came from, then in the line
            decision = self.waits.explained(decision, snap, job.tenant, store, before, projected)
            self.waits.record(job, decision, self.policy, snap, store, self.fair.place(job.id))
        self.pending_burst.seen(job.id, decision.facts.burst_pending_since, snap.now)
        return decision

    # Money -----------------------------------------------------------------------------

    def reserve(self, job: Job, attempt: Attempt, decision: Decision, store: JobStore) -> bool:
        """Reserve a burst's estimated cash atomically; False when the budget would be exceeded."""
        self.fair.forget(job.id)
        if decision.offer is None or is_onprem(self.policy, decision.offer.site):
            self.fair.started(self.policy, job, attempt)
            return True
        return self.ledger.reserve(job, attempt, decision, store)

    def settle(
        self, job: Job, attempt: Attempt, status: AttemptStatus, store: JobStore, *, ran: bool = True
    ) -> None:
        """An attempt ended: forget its job's burst memory when the job is over, settle its spend
        (none when `ran` is False: no instance of it ever existed)."""
        self.on_settled(attempt, status.state)
        if status.state.terminal:
            self.fair.ended(attempt, self.clock.now(), status)
        if status.state == AttemptState.SUCCEEDED:
            self.waits.ratios.forget(job.tenant)  # its history grew: learn the ratio again
        if status.state in (AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.CANCELLED):
            self.burst_jobs.discard(job.id)  # the job is over: forget its burst memory
            self.pending_burst.pop(job.id)
        update = {"state": status.state, "error": status.message, "updated_at": self.clock.now()}
        self.recent.append(attempt.model_copy(update=update))
        self.ledger.settle(job, attempt, store, ran=ran, ended=status.stopped_at)

    def restore_launches(self, store: JobStore) -> None:
        """Each cloud route's newest launch times from the store, at a (re)start or a failover."""
        self.launches = read_launch_times(self.policy, store)

    def launched(self, attempt: Attempt, now: datetime) -> None:
        """An attempt's job is running for the first time: a cloud route times its launch."""
        self.fair.launched(attempt.id, now)
        self.fair.reclaimer.release(attempt.job_id)  # units reclaimed for it are its own now
        if not is_onprem(self.policy, attempt.site):  # (an on-prem start includes its queue)
            self.launches.observe(attempt.site, (now - attempt.created_at).total_seconds())

    # Admission and explain -------------------------------------------------------------

    def admit(self, spec: JobSpec, tenant: TenantId, now: datetime) -> list[str]:
        """Reasons the job can never be placed for this tenant (empty when it can)."""
        policy = self.policy
        # Answers are remembered by what placeability depends on (not the command: ADMISSION_FIELDS).
        shape = spec.model_dump_json(include=ADMISSION_FIELDS)
        ctx = PlacementContext(now=now, no_images=self.offers.no_images() if spec.image else {})
        key = (policy.version, tenant, shape + repr(Env(spec, tenant, policy, ctx).job_fp), bool(spec.image))
        cached = self._admitted.get(key)
        if cached is not None:
            return cached
        expl = place(spec, tenant, self.catalog_offers(), policy, ctx)
        allowed = [s.offer for s in expl.unranked]  # all of them where no quota or spot limit ever admits it
        reasons = never_runs(policy, tenant, spec, allowed) if allowed else [
            f"{r.rule}: {r.message}" for r in refusal_summary(expl, spec, tenant, policy, ctx)[:10]
        ] or ["no offers"]
        if len(self._admitted) > 10_000:
            self._admitted.clear()
        self._admitted[key] = reasons
        return reasons

    def vet(self, spec: JobSpec) -> list[FieldViolation]:
        """Field problems of a well-formed spec against this policy: accelerators nobody knows."""
        return unknown_accelerators(spec, self.policy, self.catalog_offers())

    # Fair share ------------------------------------------------------------------------

    def grant(self, spec: JobSpec, tenant: TenantId) -> str | None:
        """Why the tenant may not declare this job's priority class (None when it may)."""
        return priority_refusal(self.policy, tenant, spec.priority)

    def order_queue(self, jobs: Sequence[Job], now: datetime, *, full: bool) -> list[Job]:
        """Queued jobs in fair-share order across tenants (`full`: the whole queue, keep standings).

        It starts a pass: the projected waits' lines are redrawn in this order when `full`."""
        self.waits.begin_pass(full=full)
        ordered = self.fair.order(self.policy, jobs, now, remember=full)
        if not full:  # the waiters stand where the new jobs' ranking put them
            self.waits.reposition(self.fair.place)
        return ordered

    def still_waiting(self, job: Job) -> None:
        """A queued job the pass skipped (deep in a head scan): it still waits where it did."""
        self.waits.keep(job, self.fair.place(job.id))

    def observe_live(self, live: Sequence[Attempt], now: datetime, store: JobStore) -> None:
        """Tell fair share which attempts are live (after a restart, or ends nobody reported)."""
        self.fair.observe(self.policy, live, now, store)

    def batch_account(self, job: Job) -> BatchIdentity:
        """Account, QOS and user the job runs under at a batch system: Slurm's fair share sees the tenant."""
        return batch_account(self.policy, job.tenant, job.spec.priority)

    @property
    def reclaimer(self) -> Reclaimer:
        """Reclaim's state: its waste budget, and the preempted work still stopping."""
        return self.fair.reclaimer

    def standing(self, job_id: str, stored: str = "") -> str | None:
        """Why a queued job waits (latest, else `stored`) and where it stands (None: not ordered yet)."""
        return self.fair.describe(job_id, stored)


