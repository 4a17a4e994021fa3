"""The `api` role's stand-in for the dispatcher: store writes only, never a backend call.

An API replica validates, admits and inserts; it records cancellations and agent reports in
the store and wakes the active scheduler (LISTEN/NOTIFY), which does everything that talks
to a backend: launching, stopping the instances of cancelled jobs, terminating finished ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from adapters.base import Adapter
from broker.burst.snapshot import PassSnapshot
from broker.clock import Clock
from broker.dispatch.attempts import AttemptTracking
from broker.dispatch.cancelling import ANSWER_WITHIN_S
from broker.dispatch.contract import DecisionMaker, DispatchStats
from broker.dispatch.queue_read import read_queue
from broker.ha.lease_watch import LeaseWatch
from broker.ha.notify import Notifier
from broker.heard import Heard
from broker.model import Attempt, Job, JobId, JobState, SiteId
from broker.policy import Policy
from broker.sitereport import SiteReport
from broker.store import CancelRequest, JobStore, StoreError

log = logging.getLogger(__name__)

REPORT_REFRESH_S = 1.0
"""How often a replica re-reads the active scheduler's report on its sites."""
SETTLE_POLL_S = 0.1
"""How often a cancel's answer reads whether the scheduler settled it (for `ANSWER_WITHIN_S`)."""


Follow = Callable[[Policy, Sequence[Attempt], Sequence[Job], datetime, JobStore, int], None]
"""`FairQueue.follow`: fair share's state read from the store (live attempts, usage, the queue)."""


class StoreOnlyDispatch(AttemptTracking):
    """What `BrokerServices` asks of a dispatcher, done with the store alone."""

    def __init__(
        self,
        store: JobStore,
        *,
        planner: DecisionMaker,
        clock: Clock,
        notifier: Notifier | None,
        snapshot_refresh_s: float = 2.0,
        lease_s: float = 3.0,
        adopt: Callable[[SiteReport], None] | None = None,
        follow: Follow | None = None,
        queue_window: int = 10_000,
    ) -> None:
        self.store = store
        self.adapters: Mapping[SiteId, Adapter] = {}
        self.planner = planner
        self.clock = clock
        self.notifier = notifier
        self.snapshot_refresh_s = snapshot_refresh_s
        self.heartbeats = Heard(clock)
        self.stats = DispatchStats()
        self.agent_endpoint = ""
        self.agent_ca_pem = ""
        self.started_at = clock.now()
        self._background: set[asyncio.Task[None]] = set()
        self._inflight: dict[JobId, asyncio.Task[None]] = {}
        self._stops_in_flight: set[str] = set()  # (a replica has no adapters: the leader stops them)
        self._snap: tuple[float, PassSnapshot] | None = None
        self._refreshing = asyncio.Lock()
        self.lease_watch = LeaseWatch(lease_s, REPORT_REFRESH_S)
        """The scheduler's lease as this replica sees it renewed (`szb status`'s "leads")."""
        self.adopt = adopt
        """Takes the active scheduler's report on its sites as this replica's view of them."""
        self.follow = follow
        """Takes fair share's state (live attempts, the queue) as the scheduler keeps it, for explain."""
        self.queue_window = queue_window
        """The scheduler's `dispatch.queue_window`: this replica reads the queue as its passes do."""
        self._reports: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The scheduler owns the decision loop; this replica follows what it says of its sites."""
        if self.adopt is not None:
            self._reports = asyncio.get_running_loop().create_task(self._follow_site_reports(self.adopt))

    async def stop(self) -> None:
        if self._reports is not None:
            self._reports.cancel()
            await asyncio.gather(self._reports, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _follow_site_reports(self, adopt: Callable[[SiteReport], None]) -> None:
        """Sick sites, breakers, blocks and bursts are only known to the scheduler that calls backends."""
        while True:
            try:
                found = await asyncio.to_thread(self.store.site_report)
                self.lease_watch.saw(await asyncio.to_thread(self.store.leadership), self.clock.now())
            except StoreError as exc:  # the last report stays shown; the next read tries again
                log.warning("the scheduler's site report could not be read: %s", exc)
            else:
                if found is not None:
                    report = SiteReport.from_json(found[0])
                    adopt(report)
                    self.stats.bursts = list(report.bursts)
            await asyncio.sleep(REPORT_REFRESH_S)

    def job_submitted(self, job: Job) -> None:
        """The store's `submitted` event already wakes the scheduler."""

    def policy_changed(self) -> None:
        self._snap = None

    def heartbeat(self, attempt: Attempt) -> None:
        """An agent is alive: tell the scheduler, which keeps the heartbeat clock."""
        self.heartbeats.beat(attempt.id)
        if self.notifier is not None:
            self.notifier.send({"hb": attempt.id, "j": attempt.job_id})

    async def cancel(self, job: Job, *, by: str = "", role: str = "") -> Job:
        """Cancel a job nothing ran of yet; for one that runs, record the request for the
        scheduler, which alone can ask the backend whether the run ended first, and wait a moment
        for its answer. The scheduler also stops the attempts at their backends."""
        message = f"cancelled by {by}" + (f" ({role})" if role else "") if by else "cancelled by the user"
        while not job.state.terminal:
            if self._may_have_run(job):
                request = CancelRequest(JobId(job.id), by, role, self.clock.now())
                asked = "cancel requested" + message.removeprefix("cancelled")
                asked += "; the scheduler stops it unless it ended"
                job, _ = self.store.request_cancel(request, asked)
                return await self._settled(job)
            who = {"by": by, "role": role} if by else {}
            job = self.store.transition(
                job.id,
                JobState.CANCELLED,
                self.clock.now(),
                kind="cancelled",
                message=message,
                data={**who, "policy_hash": self.planner.policy.hash},  # (the audit trail names it)
                expect=job.state,
            )
        return job

    def _may_have_run(self, job: Job) -> bool:
        """A backend was asked to start the job (a launch still in flight stops itself on seeing
        the job cancelled, and reads nothing of a run)."""
        if job.state == JobState.QUEUED:
            return False
        return any(a.backend_id is not None and not a.state.terminal for a in self.store.attempts_for(job.id))

    async def _settled(self, job: Job) -> Job:
        """The job once the scheduler settled its cancel, or as it is after `ANSWER_WITHIN_S`."""
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while not job.state.terminal and time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_POLL_S)
            job = await asyncio.to_thread(self.store.get, job.id)
        return job

    def cancel_pending(self, job_id: JobId) -> bool:
        """A cancel of the job waits for the scheduler (its agent is told to stop meanwhile)."""
        return self.store.cancel_request(job_id) is not None

    async def follow_queue(self) -> bool:
        """Decide the queue again (when the snapshot is old) before a queued job's reason is read:
        the scheduler stores a new reason only when its wording changes, not its numbers."""
        if self.follow is None:
            return False
        await self.current_snapshot()
        return True

    async def current_snapshot(self) -> PassSnapshot:
        """Offers from the catalog and the scheduler's site report (no adapter is asked), and fair
        share's state from the store, cached for a refresh interval."""
        async with self._refreshing:  # (two refreshes at once would decide the queue into one planner)
            now = time.monotonic()
            if self._snap is None or now - self._snap[0] >= self.snapshot_refresh_s:
                live = self.store.live_attempts()
                snap = await asyncio.to_thread(self.planner.snapshot, self.clock.now(), live)
                if self.follow is not None:
                    queued, cut = await read_queue(self.store, self.queue_window, fill=False)
                    heads_only = self.queue_window if cut else 0
                    await asyncio.to_thread(self._follow, self.follow, live, queued, snap, heads_only)
                self._snap = (now, snap)
        snap = self._snap[1]
        snap.now = self.clock.now()
        snap.drained = self.planner.health.drained()  # (an undrain is placeable at once)
        return snap

    def _follow(
        self, follow: Follow, live: Sequence[Attempt], queued: Sequence[Job], snap: PassSnapshot,
        heads_only: int,
    ) -> None:
        """Fair share's state as the scheduler keeps it, then the queue decided on `snap` in fair
        order as the scheduler's pass decides it, acting on nothing: explain and `szb get` then
        count the waiters ahead, the capacity held for a head job and the units the pass claims."""
        follow(self.planner.policy, live, queued, snap.now, self.store, heads_only)
        for job in self.planner.order_queue(queued, snap.now, full=True):
            self.planner.decide(job, snap, self.store)
