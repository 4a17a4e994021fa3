"""The `scheduler` role: the dispatcher and the reconciler run only while this process leads.

A standby campaigns (see `election`); once elected it fences the store with its epoch,
recovers and reconciles like a restarted broker, and starts deciding. API replicas wake it
through notifications (new jobs, cancellations, agent reports); a sweep catches what a lost
notification would have said. Deposed, it stops its dispatcher and goes back to standby.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from grpc_health.v1 import health_pb2
from prometheus_client import Gauge

from adapters.base import Adapter, AdapterError
from broker.dispatch.dispatcher import Dispatcher
from broker.ha.election import Elector, Timing
from broker.ha.guard import LeaderOnlyAdapter, LeaderOnlyStore, leader_only
from broker.ha.notify import Listener, Note, Notifier
from broker.logs import say, says_json
from broker.metrics import BrokerMetrics
from broker.model import JobId, JobState, SiteId
from broker.sitereport import SiteReport
from broker.store import REQUESTED, JobStore, PostgresStore, StoreError

log = logging.getLogger(__name__)

SWEEP_S = 5.0
"""How often the leader looks for live attempts of jobs that ended (a cancel it missed)."""
ENDED_KINDS = frozenset({"finished", "lost", "preempted"})
LEADER_HEALTH = "shangzhuang.broker.v1.Scheduler"
"""Health-check service name that is SERVING only on the active scheduler (a readiness probe)."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PUBLISH_S = 1.0
"""How often the leader looks whether its report on its sites changed (replicas show it)."""
STEP_TRIES = 5
STEP_RETRY_S = 1.0
"""A wake-up's step the store refused is tried again this often, this far apart."""
MAX_NEW_READS = 200
"""New jobs announced together up to which each is read and handed over; above: a full pass."""


class SchedulerRole:
    """Runs a `Dispatcher` for each term this process leads; nothing in between."""

    def __init__(
        self,
        dsn: str,
        store: JobStore,
        adapters: Mapping[SiteId, Adapter],
        make_dispatcher: Callable[[JobStore, Mapping[SiteId, Adapter]], Dispatcher],
        *,
        timing: Timing,
        metrics: BrokerMetrics,
        notifier: Notifier,
        health: Any = None,
        report: Callable[[Sequence[datetime], datetime], SiteReport] | None = None,
    ) -> None:
        self.make_dispatcher = make_dispatcher
        # The lease on a connection of its own: through the dispatcher's store, a renewal waited
        # behind the pass's queue reads (one connection, one lock) and a leader over a deep queue
        # lost its own lease again and again, never dispatching (held-out review, 1M queued).
        self._lease_book = PostgresStore(dsn)
        self._lease_book.clock = store.clock
        self.elector = Elector(
            dsn, self._lease_book, on_elected=self._elected, on_deposed=self._deposed, timing=timing,
            clock=store.clock,
        )
        # What the dispatcher writes and calls goes out only while this process surely leads.
        self.store = cast(JobStore, LeaderOnlyStore(store, self.elector.may_act))
        self.adapters: dict[SiteId, LeaderOnlyAdapter] = {
            site: leader_only(a, self.elector.may_act) for site, a in adapters.items()
        }
        self.listener = Listener(dsn, self._note_from_thread, ignore_sender=notifier.sender)
        self.listener.on_reconnect = self._reconnected_from_thread
        self.health = health
        """The gRPC health servicer: `LEADER_HEALTH` is SERVING only while this process leads."""
        self.report = report
        """What this process learns of its sites while it leads (published for the replicas)."""
        self.dispatcher: Dispatcher | None = None
        self.epoch: int | None = None
        self._changes: asyncio.Queue[tuple[str, int | None]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._new: set[str] = set()
        self._leader = Gauge(
            "szb_scheduler_leader", "1 while this process is the active scheduler", registry=metrics.registry
        )
        self._epoch = Gauge(
            "szb_scheduler_epoch", "Fencing epoch of this process's term", registry=metrics.registry
        )

    def add_adapter(self, site: SiteId, adapter: Adapter) -> None:
        """A site's adapter built after start (a reloaded policy added or changed the site)."""
        self.adapters[site] = leader_only(adapter, self.elector.may_act)

    async def start(self) -> None:
        await self._set_health(False)
        self._supervisor = asyncio.create_task(self._supervise(), name="scheduler-role")
        self.listener.start()
        self.elector.start()
        _say("scheduler standing by for election")

    async def stop(self) -> None:
        await asyncio.to_thread(self.elector.stop)  # a leader steps down first: standbys go at once
        self._changes.put_nowait(("stop", None))
        await self._supervisor
        await asyncio.to_thread(self.listener.stop)
        self._lease_book.close()

    # Terms -------------------------------------------------------------------------------

    def _elected(self, epoch: int) -> None:
        self._loop.call_soon_threadsafe(self._changes.put_nowait, ("elected", epoch))

    def _deposed(self, reason: str) -> None:
        self._loop.call_soon_threadsafe(self._changes.put_nowait, ("deposed", None))

    async def _supervise(self) -> None:
        while True:
            change, epoch = await self._changes.get()
            if change == "elected" and epoch is not None:
                await self._lead(epoch)
            else:
                await self._follow()
            if change == "stop":
                return

    async def _lead(self, epoch: int) -> None:
        await self._follow()
        # From now on the database refuses this store's writes once another term began.
        self.store.set_fence(epoch)
        self.epoch = epoch
        dispatcher = self.make_dispatcher(self.store, self.adapters)
        self.dispatcher = dispatcher
        try:
            await dispatcher.start()  # recover + reconcile, like a restarted broker
        except Exception:
            # A leader that does not dispatch is worse than none: let a standby have the role.
            log.exception("the scheduler could not start its term (epoch %d)", epoch)
            self.elector.resign()
            return
        self._leader.set(1)
        self._epoch.set(epoch)
        await self._set_health(True)
        # Cancels recorded while no scheduler ran: settled now, not at the first sweep.
        self._spawn(self._retried("settling recorded cancels", self._stop_ended, dispatcher))
        self._spawn(self._sweep(dispatcher))
        if self.report is not None:
            self._spawn(self._publish(dispatcher, self.report))
        _say(f"scheduler active (epoch {epoch})")

    async def _follow(self) -> None:
        dispatcher, self.dispatcher = self.dispatcher, None
        if dispatcher is None:
            return
        self._leader.set(0)
        await self._set_health(False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await dispatcher.stop()
        _say(f"scheduler standby (term {self.epoch} over)")

    async def _set_health(self, leading: bool) -> None:
        if self.health is not None:
            await self.health.set(LEADER_HEALTH, SERVING if leading else NOT_SERVING)

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Wake-ups from API replicas -------------------------------------------------------------

    def _note_from_thread(self, note: Note) -> None:
        self._loop.call_soon_threadsafe(self._on_note, note)

    def _reconnected_from_thread(self, first: bool) -> None:
        self._loop.call_soon_threadsafe(self._catch_up, first)

    def _catch_up(self, first: bool) -> None:
        """The listener (re)connected: what its wake-ups would have said meanwhile is read again
        (new jobs, cancellations, ended attempts), not left to the next rescan."""
        d = self.dispatcher
        if d is None:
            return  # (a term's start recovers and reconciles anyway)
        log.info("notification listener connected: catching up on what it may have missed")
        d.catch_up(reconnected=not first)
        self._spawn(self._retried("stopping ended jobs' attempts", self._stop_ended, d))

    def _on_note(self, note: Note) -> None:
        d = self.dispatcher
        if d is None:
            return
        if isinstance(note.get("hb"), str):
            d.heartbeats.beat(note["hb"])
        kind, job_id = note.get("e"), note.get("j")
        if not isinstance(job_id, str):
            return
        if kind == "submitted":
            if not self._new:
                self._loop.call_soon(self._submitted, d)
            self._new.add(job_id)
        elif kind == "cancelled":
            self._spawn(self._retried(f"stopping {job_id}", self._stop_attempts, d, JobId(job_id)))
        elif kind == REQUESTED:
            self._spawn(self._retried(f"settling {job_id}'s cancel", self._settle, d, JobId(job_id)))
        elif kind in ENDED_KINDS:
            what = f"removing {job_id}'s instance"
            self._spawn(self._retried(what, self._remove_leftovers, d, JobId(job_id)))
            # (an agent's report through a replica can end a job whose cancel is pending)
            self._spawn(self._retried(f"settling {job_id}'s cancel", self._settle, d, JobId(job_id)))

    async def _retried(
        self, what: str, step: Callable[..., Awaitable[None]], d: Dispatcher, *args: Any
    ) -> None:
        """Run a wake-up's step; one the store refused (away, or this term over) is said in one
        line and tried again while this term lasts (a few times: the sweep and reconcile remain)."""
        for tries in range(1, STEP_TRIES + 1):
            try:
                await step(d, *args)
                return
            except (StoreError, AdapterError) as exc:
                if d is not self.dispatcher or tries == STEP_TRIES:
                    log.warning("%s failed: %s; left to the sweep and the reconciler", what, exc)
                    return
                log.warning("%s failed: %s; trying again in %.0f s", what, exc, STEP_RETRY_S)
                await asyncio.sleep(STEP_RETRY_S)

    def _submitted(self, d: Dispatcher) -> None:
        ids, self._new = self._new, set()
        if d is not self.dispatcher:
            return
        if len(ids) > MAX_NEW_READS:
            d.policy_changed()  # a flood: one pass over the whole queue, not a read per job
            return
        for job_id in sorted(ids):
            try:
                job = self.store.get(job_id)
            except StoreError:
                continue
            if job.state == JobState.QUEUED:
                d.job_submitted(job)

    async def _stop_attempts(self, d: Dispatcher, job_id: JobId) -> None:
        """Stop the live attempts of a job an API replica cancelled (or that ended meanwhile)."""
        await d.stop_attempts(self.store.get(job_id))

    async def _settle(self, d: Dispatcher, job_id: JobId) -> None:
        """Cancel a job an API replica asked to cancel, unless it ended first (then it is said)."""
        await d.settle_cancel_request(job_id)

    async def _remove_leftovers(self, d: Dispatcher, job_id: JobId) -> None:
        """An agent reported the end through a replica: remove the instance, re-decide."""
        for attempt in self.store.attempts_for(job_id):
            if attempt.state.terminal and attempt.backend_id and d.planner.needs_agent(attempt.site):
                d.heartbeats.forget(attempt.id)
                await d._terminate(attempt)
        d.capacity_changed()

    async def _sweep(self, d: Dispatcher) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self._stop_ended(d)
            except (StoreError, AdapterError) as exc:  # a store hiccup (or the fence): the next sweep
                log.warning("scheduler sweep failed: %s", exc)
            except Exception:
                log.warning("scheduler sweep failed", exc_info=True)

    async def _stop_ended(self, d: Dispatcher) -> None:
        """Settle the cancels replicas recorded (while no scheduler ran, or a wake-up was lost),
        then stop the live attempts of jobs that ended (a cancel whose wake-up was lost)."""
        for request in self.store.cancel_requests():
            await self._settle(d, request.job_id)
        ended = {a.job_id for a in self.store.live_attempts() if self.store.get(a.job_id).state.terminal}
        for job_id in ended:
            await self._stop_attempts(d, job_id)

    async def _publish(
        self, d: Dispatcher, report: Callable[[Sequence[datetime], datetime], SiteReport]
    ) -> None:
        """Replicas answer szb status and /metrics: tell them what only the leader learns (the
        bursts of a previous term within the hour are read from the store at the dispatcher's start)."""
        published = ""
        while True:
            now = self.store.clock.now()
            got = report(d.stats.bursts, now)
            age = (now - got.read_at).total_seconds() if got.read_at is not None else math.inf
            if age >= max(d.settings.poll_interval_s, PUBLISH_S):
                # Passes read capacity only while jobs are queued: an idle scheduler's reading
                # would go stale, and replicas would explain with capacity long since taken.
                try:
                    await d.current_snapshot()
                except Exception:  # (the backends' own errors are the site health's; keep the last)
                    log.debug("no fresh capacity reading for the site report", exc_info=True)
                now = self.store.clock.now()
                got = report(d.stats.bursts, now)
            body = got.to_json()
            if body != published:
                try:
                    await asyncio.to_thread(self.store.publish_site_report, body, now)
                    published = body
                except StoreError as exc:  # deposed, or a store hiccup: the next round tries again
                    log.warning("site report not published: %s", exc)
            await asyncio.sleep(PUBLISH_S)


def _say(line: str) -> None:
    """One line on stdout for operators and the test harness, and in the log (a JSON log has it
    once: `say` writes it as a record)."""
    if not says_json():
        log.info("%s", line)
    say(line, event="election")
