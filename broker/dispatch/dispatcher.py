"""The lifecycle driver: queued jobs → decisions → attempts at sites → terminal states.

It is the imperative shell around the pure decision core: it gathers snapshots (offers,
capacity), asks `decide`, and acts, recording every step on the job before calling a backend.
The parts: `scheduling` (a pass: which jobs, which snapshot, acting on each decision),
`launch` (placing, reserving, submitting, failing over), `attempts` (polls, agent reports,
cancel), `reconcile` and `preempt`; this module wires them to the outside world.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from adapters.base import Adapter, AdapterError
from broker.agent_secret import SecretEscrow
from broker.burst.snapshot import PassSnapshot
from broker.clock import Clock
from broker.config import DispatchSettings
from broker.dispatch.contract import DecisionMaker, DispatchStats
from broker.dispatch.kept_stops import KeptStops
from broker.dispatch.launch_history import read_recent_bursts
from broker.dispatch.reconcile import log_not_listed, reconcile
from broker.dispatch.scheduling import Scheduling
from broker.dispatch.site_polls import SitePolls
from broker.dispatch.unrecorded import LATE_CALL_S, look_up
from broker.dispatch.withdraw import pending_at_queue, withdraw_late
from broker.dispatch.withdraw_drained import withdraw_drained
from broker.dispatch.withdraw_fair import withdraw_unfair
from broker.dispatch.withdraw_reclaim import withdraw_to_reclaim
from broker.heard import Heard
from broker.metrics import BrokerMetrics
from broker.model import Attempt, Job, JobId, JobState, SiteId
from broker.store import FencedOut, JobStore, StoreUnavailable
from broker.store_outage import StoreOutageLog
from broker.waiting import within

log = logging.getLogger(__name__)

UNREACHABLE_RETRY_S = 2.0
"""First retry of a site the reconciler could not reach; doubles up to the reconcile interval."""
CATCH_UP_RECONCILE_S = 30.0
"""The shortest gap between two reconciles a reconnected LISTEN session forces (`catch_up`)."""

ACTIVE = (JobState.PLACING, JobState.PROVISIONING, JobState.RUNNING)
RESTARTED = "broker restarted before the attempt was started"
STRANDED = "the store failed before the attempt was started"


class Dispatcher(Scheduling):
    """Moves jobs through the state machine; one asyncio task plus worker threads for I/O."""

    def __init__(
        self,
        store: JobStore,
        adapters: Mapping[SiteId, Adapter],
        *,
        planner: DecisionMaker,
        clock: Clock,
        settings: DispatchSettings | None = None,
        agent_endpoint: str = "",
        metrics: BrokerMetrics | None = None,
        escrow: SecretEscrow | None = None,
    ) -> None:
        self.store = store
        self.escrow = escrow or SecretEscrow(None)
        self.adapters = adapters
        self.planner = planner
        self.clock = clock
        self.settings = settings or DispatchSettings()
        self.agent_endpoint = agent_endpoint
        self.agent_ca_pem = ""
        """CA bundle instances verify the agent endpoint's certificate with (empty: system roots)."""
        self.stats = DispatchStats()
        self.metrics = metrics or BrokerMetrics()
        self.heartbeats = Heard(clock)
        self.started_at = clock.now()
        self.store_outage = StoreOutageLog(log, clock)
        self._background: set[asyncio.Task[None]] = set()
        self._last_reconcile = 0.0
        self._last_catch_up = float("-inf")
        self._last_withdraw = 0.0
        self._last_poll = 0.0
        self._snap: PassSnapshot | None = None
        self._snap_at = 0.0
        self._kick = asyncio.Event()
        self._dirty = True
        self._full = True
        self._new_jobs: dict[JobId, Job] = {}
        self._last_submit = 0.0
        self._first_new = 0.0
        self._inflight: dict[JobId, asyncio.Task[None]] = {}
        self._polls = SitePolls()  # sites whose status calls fail: polled less often
        self._stops_in_flight: set[str] = set()
        """Attempts of ended jobs whose backend is being told to stop again."""
        self._kept_stops = KeptStops()
        self._waiting_reason: dict[JobId, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._queue_cut = False
        self._last_full_scan = 0.0
        self._unreachable: dict[SiteId, tuple[float, float]] = {}
        self._listing_errors: dict[SiteId, str] = {}  # as last logged, so each outage is logged once
        """Sites the last reconcile could not reach: (loop time of the next try, backoff)."""
        self._drained: dict[SiteId, str] | None = None
        """The drained sites the last loop saw (`_drains_changed`)."""
        self._pass_failed = False
        """The last pass raised (the store went away mid-launch, say): placed jobs may be stranded."""

    # Signals from the outside world ------------------------------------------------------

    def job_submitted(self, job: Job) -> None:
        loop_now = asyncio.get_running_loop().time()
        if not self._new_jobs:
            self._first_new = loop_now
        self._last_submit = loop_now
        self._new_jobs[job.id] = job
        self._kick.set()

    async def follow_queue(self) -> bool:
        """A replica's hook to re-decide the queue before a read (`StoreOnlyDispatch`); this
        dispatcher's own passes keep the waiting reasons current: nothing to do."""
        return False

    def capacity_changed(self) -> None:
        """Capacity freed or a job came back: re-decide the head of the queue now."""
        self._dirty = True
        self._snap = None
        self._kick.set()

    def policy_changed(self) -> None:
        """A new policy: every queued job is decided again, from the head to the tail."""
        self._full = True
        self.capacity_changed()

    def _drains_changed(self) -> None:
        """A drain put in force or lifted, by this process or any other of the store (an API
        replica): every queued job is decided again, as after a reload, so an undrained site
        is placed on at once and a drained one's waiters look elsewhere."""
        drained = self.planner.health.drained()
        if self._drained is not None and drained != self._drained:
            self.policy_changed()
        if drained.keys() - (self._drained or {}).keys():
            self._last_withdraw = float("-inf")  # (what pends at a newly drained site leaves now)
        self._drained = drained

    def catch_up(self, reconnected: bool = True) -> None:
        """Wake-ups may have been lost (the scheduler's LISTEN session (re)connected): a pass over
        the whole queue and a reconcile (instances of attempts that ended meanwhile) now; after a
        reconnect at most one reconcile per `CATCH_UP_RECONCILE_S`, a later one put off to then,
        not dropped (a session a pooler or an idle timeout keeps closing would list every cloud
        each second). The first connection does not count: it often lands as a term starts."""
        now = asyncio.get_running_loop().time()
        if not reconnected or now - self._last_catch_up >= CATCH_UP_RECONCILE_S:
            self._last_reconcile = float("-inf")
            if reconnected:
                self._last_catch_up = now
        elif self._last_catch_up <= now:  # (none put off yet)
            self._last_catch_up += CATCH_UP_RECONCILE_S
            due = self._last_catch_up - self.settings.reconcile_interval_s
            self._last_reconcile = min(self._last_reconcile, due)
        self.policy_changed()

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        # Fair share's book from the store and the live attempts now, not at the first pass (an
        # empty queue has none): explain reads it too, and must stand a tenant where a pass will.
        # Read afresh each term: another leader may have booked, released and charged meanwhile.
        self.planner.fair.begin_term()
        self.planner.observe_live(self.store.live_attempts(), self.clock.now(), self.store)
        await self._check_kept_stops()
        self.planner.restore_launches(self.store)
        self.stats.bursts[:0] = read_recent_bursts(self.planner.policy, self.store, self.clock.now())
        await self._reconcile(None, at_start=True)
        self._last_reconcile = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def _reconcile(self, sites: set[SiteId] | None, *, at_start: bool = False) -> None:
        """Reconcile `sites` (None: all); an unreachable site is unhealthy and retried soon."""
        report = await reconcile(
            self.store, self.adapters, self.clock, sites=sites, launching=set(self._inflight),
            stopping=set(self._stops_in_flight), at_start=at_start,
        )
        loop_now = asyncio.get_running_loop().time()
        for site, exc in report.not_listed.items():
            self._listing_errors[site] = log_not_listed(site, exc, self._listing_errors.get(site))
        for site in report.reached:
            # (a pass with nothing left to terminate there ends a refusal's hold too)
            self.planner.health.record_stop(site, report.not_terminated.get(site))
            failed = self._listing_errors.pop(site, None) is not None
            # The planner outlives a term: a deposed leader's refused listing (NotLeader) marked
            # the site unreachable there, and this term's dispatcher never knew (held-out review).
            if self._unreachable.pop(site, None) is not None or site in self.planner.health.unreachable:
                self.planner.mark_reachable(site)
                self.capacity_changed()  # jobs waiting for it are decided now, not at the next scan
            elif not failed:
                continue
            log.info("site %s is reachable again", site)
        for site, reason in report.unreachable.items():
            self._back_off(site, loop_now)
            self.planner.mark_unreachable(site, reason)
        # Out since the start for want of credentials, its later auth errors are not "unreachable"
        # (the breaker's to find once it serves): it stays out, tried again later, not every turn.
        for site in set(self._unreachable) - set(report.reached) - set(report.unreachable):
            if sites is None or site in sites:
                self._back_off(site, loop_now)
        if report.unreachable:
            self.capacity_changed()

    def _back_off(self, site: SiteId, loop_now: float) -> None:
        """The site's next listing, twice as far off as the last (2 s, up to the reconcile interval)."""
        last = self._unreachable.get(site, (0.0, UNREACHABLE_RETRY_S / 2))[1]
        backoff = min(last * 2, self.settings.reconcile_interval_s)
        self._unreachable[site] = (loop_now + backoff, backoff)

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            await self._task
        for task in [*self._inflight.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*self._inflight.values(), *self._background, return_exceptions=True)

    async def recover(self) -> None:
        """After a restart: requeue half-placed jobs, re-attach live attempts, resume launches."""
        now = self.clock.now()
        resumed: set[str] = set()
        # PREEMPTED is a step on the way back to QUEUED: a broker killed between the two
        # transitions must not leave the job stranded there.
        for job in self.store.jobs_in_states([*ACTIVE, JobState.PREEMPTED]):
            attempts = self.store.attempts_for(job.id)
            live = [a for a in attempts if not a.state.terminal]
            if job.state in (JobState.PLACING, JobState.PREEMPTED) or not live:
                # `expect`: another process (an API replica taking an agent's exit report) may have
                # ended the job since it was read; then it stays as that process left it.
                self.store.transition(
                    job.id, JobState.QUEUED, now, kind="requeued", message=RESTARTED, expect=job.state
                )
                continue
            attempt = live[-1]
            if attempt.backend_id is None:
                # The broker died between recording the attempt and storing the backend id:
                # submitting again with the same token adopts what the backend already started.
                resumed.add(attempt.id)
                secret = self.escrow.get(attempt.id)
                self._inflight[job.id] = asyncio.create_task(self._launch(job, attempt, None, secret))
        # Any other attempt without a backend id: its job was requeued (never sent), or is over.
        # An ended job's launch may have been sent by the last leader (a cancel mid-launch): its
        # token is looked up first. The rest close, so planning never counts them as capacity.
        for attempt in self.store.live_attempts():
            if attempt.backend_id is None and attempt.id not in resumed:
                job = self.store.get(attempt.job_id)
                if job.state.terminal and job.spec.resources.nodes == 1 and attempt.site in self.adapters:
                    self._inflight[job.id] = asyncio.create_task(self._stop_unrecorded(job, attempt))
                else:
                    self._close_unstarted(attempt, now, RESTARTED)
        self._settle_ended()
        self._dirty = True

    async def _stop_unrecorded(self, job: Job, attempt: Attempt) -> None:
        """An ended job's attempt the last leader may have launched: stop and bill what its token
        started, or close it as never started when its site has nothing for the token."""
        adapter = self.adapters[attempt.site]
        until = asyncio.get_running_loop().time() + LATE_CALL_S
        try:
            while True:
                try:
                    await self._end_unrecorded(job, attempt, adapter, await look_up(adapter, attempt, until))
                    return
                except StoreUnavailable as exc:  # waited out: left open, no pass closes it as never sent
                    self.store_outage.failed("closing a launch of the last term", exc)
                    await asyncio.sleep(1.0)
        except FencedOut as exc:
            log.info("attempt %s left to the next leader: %s", attempt.id, exc)
        finally:
            self._inflight.pop(job.id, None)

    async def _end_unrecorded(
        self, job: Job, attempt: Attempt, adapter: Adapter, backend_id: str | None
    ) -> None:
        if backend_id is None:
            why = f"{RESTARTED}; {attempt.site} has nothing for its token"
            self._close_unstarted(attempt, self.clock.now(), why)
            return
        try:
            await asyncio.to_thread(adapter.cancel, backend_id, attempt.token)
            done = "cancelled"
        except AdapterError as exc:  # the attempt is closed below, so the reconciler removes it
            log.warning("cancel of %s (%s) at %s failed: %s", backend_id, attempt.id, attempt.site, exc)
            done = f"its cancel failed ({exc.code}), left to the reconciler"
        attempt = self.store.update_attempt(attempt.id, self.clock.now(), backend_id=backend_id)
        why = (f"the job ended while the last leader launched attempt {attempt.number}; {backend_id}, "
               f"found at {attempt.site} by the attempt's token, {done}")
        if self.cancelled(self.store.get(job.id), attempt, why):
            log.info("%s", why, extra={"event": "launch_stopped", "job_id": job.id, "attempt_id": attempt.id})
        self.capacity_changed()

    def _settle_ended(self) -> None:
        """Settle the spend of attempts that ended unsettled: closing an attempt and settling its
        spend are two writes, and a broker killed between them left the reservation (the whole
        estimate) counted against the tenant for good. Settled at the attempt's own end."""
        for entry in self.store.unsettled_spend():
            attempt = self.store.get_attempt(entry.attempt_id)
            if attempt.state.terminal:
                job = self.store.get(attempt.job_id)
                ran = attempt.backend_id is not None
                self.planner.ledger.settle(job, attempt, self.store, ran=ran, ended=attempt.updated_at)

    async def _withdraw_late(self) -> None:
        """Jobs pending at Slurm leave its queue when they are to burst now (`dispatch.withdraw`),
        or to reclaim their quota from borrowed work (`dispatch.withdraw_reclaim`), or their site
        was drained (`dispatch.withdraw_drained`); one reading of the attempts and of capacity
        serves all."""
        live = self.store.live_attempts()
        pending = pending_at_queue(live, self.planner.queueing_sites())
        if pending and self._drained:
            back = await withdraw_drained(self.store, self.planner, pending, self._drained, self.adapters,
                                          self.clock, self._in_background)
            for job in back:
                self.job_submitted(job)
            withdrawn = {j.id for j in back}
            pending = [a for a in pending if a.job_id not in withdrawn]
        if not pending:
            return
        snap = await self.planner.read_snapshot(self.clock.now(), live, wait_s=None)
        args = (self.store, self.planner, pending, snap, self.adapters, self.clock, self._in_background)
        for job in withdraw_late(*args):
            self.job_submitted(job)
            self.capacity_changed()
        for job in await withdraw_unfair(self.store, self.planner, live, pending, snap, self.adapters,
                                         self.clock, self._in_background):
            self.job_submitted(job)
        for owner, victims in await withdraw_to_reclaim(*args):
            self._reclaim(owner, victims)
            self.job_submitted(owner)
            self.capacity_changed()

    def _requeue_stranded(self) -> None:
        """After a failed pass: a job left PLACING (its launch never got an attempt going, e.g. the
        store failed between the two writes) goes back to the queue, its unstarted attempt closed.
        Outside a pass no job stays PLACING: `_start` moves it on or back without awaiting."""
        now = self.clock.now()
        for job in self.store.jobs_in_states([JobState.PLACING]):
            if job.id in self._inflight:
                continue
            for attempt in self.store.attempts_for(job.id):
                if not attempt.state.terminal and attempt.backend_id is None:
                    self._close_unstarted(attempt, now, STRANDED)
            self.store.transition(
                job.id, JobState.QUEUED, now, kind="requeued", message=STRANDED, expect=JobState.PLACING
            )
            log.warning("job requeued: %s", STRANDED, extra={"job_id": job.id, "event": "requeued"})
        self._pass_failed = False
        self.capacity_changed()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await within(self._kick.wait(), self.settings.poll_interval_s)
            except TimeoutError:
                pass
            self._kick.clear()
            if self._stopping:
                break
            try:
                if self._pass_failed:
                    self._requeue_stranded()
                self._drains_changed()
                # New work first; backends are polled on their own interval, not on every
                # submission that wakes the loop.
                await self._schedule()
                loop_now = asyncio.get_running_loop().time()
                if loop_now - self._last_poll >= self.settings.poll_interval_s:
                    self._last_poll = loop_now
                    await self._poll_attempts()
                if loop_now - self._last_withdraw >= self.settings.requeue_scan_s:
                    self._last_withdraw = loop_now
                    await self._withdraw_late()
                if loop_now - self._last_reconcile >= self.settings.reconcile_interval_s:
                    self._last_reconcile = loop_now
                    await self._reconcile(None)
                elif due := {s for s, (at, _) in self._unreachable.items() if at <= loop_now}:
                    await self._reconcile(due)
            except StoreUnavailable as exc:  # every pass meets it until the store is back: no flood
                self._pass_failed = True
                self.store_outage.failed("dispatch pass", exc)
            except FencedOut as exc:  # deposed: the next leader takes over, no fault of this pass
                self._pass_failed = True
                log.info("dispatch pass stopped: %s", exc)
            except Exception:  # the loop must survive any one bad job or backend
                self._pass_failed = True
                log.exception("dispatch pass failed")
            else:
                self.store_outage.ok("dispatch pass")
