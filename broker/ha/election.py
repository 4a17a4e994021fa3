"""Leader election for the `scheduler` role: a PostgreSQL advisory lock plus a lease.

The lock is held by a dedicated session (its own connection, its own thread), and the lease is
kept through a store of its own (`SchedulerRole`), so neither a busy event loop nor the
dispatcher's store calls delay renewal. A leader that dies loses the session and so the lock at
once; a leader that is paused (SIGSTOP, a stalled VM) keeps its session open, so a standby
that finds the lease expired terminates the holder's backend and takes the lock. Each new
leader gets a higher epoch; a leader whose own lease ran out by its monotonic clock stops
acting at once (`may_act`), before it even learns it was deposed.

A standby never compares the lease's end, written by the leader's host clock, with its own
host clock (skewed hosts would unseat a healthy leader, or wait for ever on a paused one): it
counts, by its monotonic clock, how long the lease row has gone without a renewal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from broker.clock import Clock, SystemClock
from broker.store import JobStore, LeaseBlocked

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

def lock_key(schema: str) -> tuple[int, int]:
    """The advisory lock (two-int form) only the active scheduler's election session holds.

    One per schema: advisory locks are per database, and two deployments in two schemas of one
    database (each its own `search_path`) must not take each other's leader for a rival."""
    return (0x5A42_0100, 1 if schema == "public" else zlib.crc32(schema.encode()) & 0x7FFF_FFFF)


LOCK_KEY = lock_key("public")


@dataclass(frozen=True)
class Timing:
    lease_s: float = 3.0
    renew_s: float = 0.5


class Elector:
    """Campaigns for the scheduler role in a thread; calls back on election and deposition.

    `on_elected(epoch)` and `on_deposed(reason)` run in the elector's thread: hand work to
    the event loop from them (`loop.call_soon_threadsafe`).
    """

    def __init__(
        self,
        dsn: str,
        book: JobStore,
        *,
        on_elected: Callable[[int], None],
        on_deposed: Callable[[str], None],
        timing: Timing | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.dsn = dsn
        self.book = book
        """Keeps the lease and the epoch (the store, whose fenced writes check that epoch)."""
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.timing = timing or Timing()
        self.clock = clock or SystemClock()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch: int | None = None
        self._valid_until = 0.0
        """Monotonic time the lease lasts to, counted from before the last renewal was sent."""
        self._act_after: float | None = None
        """Elected, but the last leader's lease may still run by its own clock: act from then."""
        self._last_seen: dict[int, tuple[tuple[int, datetime] | None, float]] = {}
        """Per lock holder: its lease row as last read (None: no lease of its own) and since when."""
        self._last_until: datetime | None = None
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._key = LOCK_KEY
        self._stop = threading.Event()
        self._resign = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elector", daemon=True)

    # Queries from other threads ---------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def may_act(self) -> bool:
        """True while this process leads and its lease is still valid by its own clock."""
        now = time.monotonic()
        return self.epoch is not None and self._act_after is None and now < self._valid_until

    # Lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def resign(self) -> None:
        """Give the role up at the next round (this process cannot lead now); campaign again."""
        self._resign.set()

    def stop(self) -> None:
        """Stop campaigning; a leader steps down and frees the lock for a standby at once."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        failing = False  # an outage is logged once, not at every round until it ends
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # the session broke (terminated, network): start over
                (log.debug if failing else log.warning)("election session lost: %s", exc)
                failing = True
                self._drop_session(f"election session lost: {exc}")
                self._stop.wait(self.timing.renew_s)
                continue
            if failing:
                log.info("election session open again")
                failing = False
            self._stop.wait(self.timing.renew_s)
        self._drop_session("shutting down")

    def _session(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            import psycopg

            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            row = self._conn.execute("SELECT current_schema()").fetchone()
            self._key = lock_key(str(row[0]) if row is not None and row[0] else "public")
        return self._conn

    def _drop_session(self, reason: str) -> None:
        self._step_down(reason)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a dead connection must not stop the elector
                pass
        self._conn = None

    def _step_down(self, reason: str) -> None:
        if self.epoch is None:
            return
        log.warning("scheduler leadership (epoch %d) lost: %s", self.epoch, reason)
        self.epoch = None
        self._valid_until = 0.0
        if self._act_after is not None:  # never started acting: nothing to stop
            self._act_after = None
            return
        self.on_deposed(reason)

    # One round --------------------------------------------------------------------------

    def _tick(self) -> None:
        if self._resign.is_set():
            self._resign.clear()
            self._drop_session("resigned: the term could not start")
            self._stop.wait(self.timing.lease_s)  # let a standby have it first
            return
        conn = self._session()
        if self.epoch is not None:
            self._renew(conn)
            if self.epoch is not None and self._act_after is not None and time.monotonic() >= self._act_after:
                self._act()
        else:
            self._campaign(conn)

    def _renew(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        assert self.epoch is not None
        sent = time.monotonic()
        if sent >= self._valid_until:
            # Paused past our own lease (SIGSTOP, a stall): a standby may lead by now.
            self._drop_session("the lease expired before it could be renewed")
            return
        if not self.book.renew_leadership(self.holder, self.epoch, self.timing.lease_s, self._renewal_now()):
            self._drop_session("another scheduler holds a newer epoch")
            return
        # The lock's session is used too: left idle, a server's idle_session_timeout ends it (and
        # with it the lock), and a lost session is found here, not when a standby claims.
        conn.execute("SELECT 1")
        self._valid_until = sent + self.timing.lease_s

    def _renewal_now(self) -> datetime:
        """Now, moved on by a microsecond when the host clock stood still or stepped back: every
        renewal must change the lease row, which is how standbys see the leader alive."""
        now = self.clock.now()
        if self._last_until is not None and now <= self._last_until:
            now = self._last_until + timedelta(microseconds=1)
        self._last_until = now
        return now

    def _campaign(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        sent = time.monotonic()
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._key).fetchone()
        if row is None or not row[0]:
            self._unseat_stale_holder(conn)
            return
        pid = conn.info.backend_pid
        last_lease_ends = self._last_lease_end()
        # The lock is ours, so the last leader is gone or its lease judged expired: a fenced write
        # of a live leader commits within a renewal period, and one still holding the row after
        # that is cut off or frozen. It is ended then, not after a lease (a partitioned leader's
        # write cost the takeover a whole extra lease), and the claim made again at once.
        try:
            epoch = self._claim(pid, lock_wait_s=self.timing.renew_s)
        except LeaseBlocked:
            self._end_stale_writes(conn)
            try:
                epoch = self._claim(pid, lock_wait_s=self.timing.lease_s)  # (its backend exits)
            except LeaseBlocked:
                return  # the next round ends what holds it again
        self._valid_until = sent + self.timing.lease_s
        self.epoch = epoch  # (the store's fenced writes of the last leader fail from now on)
        self._last_seen.clear()
        self._act_after = last_lease_ends
        if last_lease_ends > time.monotonic():
            wait_s = last_lease_ends - time.monotonic()
            log.warning("elected (epoch %d, holder %s): acting in %.1f s, once the last leader's lease "
                        "has run out by its own clock", epoch, self.holder, wait_s)
            return
        self._act()

    def _claim(self, pid: int, *, lock_wait_s: float) -> int:
        return self.book.claim_leadership(
            self.holder, pid, self.timing.lease_s, self._renewal_now(), lock_wait_s=lock_wait_s
        )

    def _act(self) -> None:
        """Start the term (`on_elected`): no earlier leader can still act on the backends."""
        assert self.epoch is not None
        self._act_after = None
        log.warning("elected active scheduler (epoch %d, holder %s)", self.epoch, self.holder)
        self.on_elected(self.epoch)

    def _last_lease_end(self) -> float:
        """By this process's monotonic clock, when the last leader's lease surely ended.

        Its session (and so the lock) may end while the process lives on (the session was
        terminated, a proxy dropped it): it still acts on the backends until its own clock says
        the lease ran out, `lease_s` after it sent its last renewal. That renewal reached the row
        before this standby first saw it: from then, one lease period. A row never watched counts
        from now; a holder that never claimed a lease (none, or a first claim) did not act."""
        lease = self.book.leadership()
        if lease is None:
            return 0.0
        seen = None if lease.holder_pid is None else self._last_seen.get(lease.holder_pid)
        if seen is not None and seen[0] == (lease.epoch, lease.lease_until):
            return seen[1] + self.timing.lease_s
        return time.monotonic() + self.timing.lease_s

    def _end_stale_writes(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """End the sessions whose fenced writes hold the lease row past a renewal period.

        Only a scheduler's store writes fenced (`FOR SHARE` on the row). With the advisory lock
        now ours, such a write belongs to a deposed leader paused between its fence check and
        its commit (SIGSTOP, a stall): it would hold the claim, and every candidate, for as
        long as the process lives. Ended, the write rolls back; thawed, the process finds its
        connection gone and the new epoch."""
        ended = conn.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'relation'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND relation = 'leadership'::regclass AND mode = 'RowShareLock' AND granted"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
        log.warning(
            "a deposed scheduler's write held the lease row for over %.2f s: ended its session(s) %s",
            self.timing.renew_s, ", ".join(str(r[0]) for r in ended) or "(none left)",
        )

    def _unseat_stale_holder(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Terminate the lock holder's session when its lease ran out (it is paused or hung)."""
        found = conn.execute(
            # pg_locks lists every database's locks: only this database's holder is a rival.
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2",
            self._key,
        ).fetchone()
        if found is None:
            return  # freed meanwhile: the next round takes it
        holder_pid = int(found[0])
        lease = self.book.leadership()
        now = time.monotonic()
        own = lease is not None and lease.holder_pid == holder_pid
        row = (lease.epoch, lease.lease_until) if lease is not None and own else None
        seen = self._last_seen.get(holder_pid)
        if seen is None or seen[0] != row:  # first seen, or renewed since the last look
            self._last_seen[holder_pid] = (row, now)
            return
        # Not renewed for a lease period (or a holder that never claimed one: given one period).
        if now - seen[1] < self.timing.lease_s:
            return
        log.warning(
            "the scheduler lease of %s expired: terminating its session (backend %d)",
            lease.holder if lease is not None and own else "a holder that never claimed the lease",
            holder_pid,
        )
        conn.execute("SELECT pg_terminate_backend(%s)", (holder_pid,))
        # (its entry stays: a lease seen unrenewed for a period has run out, so the term that
        # follows starts at once, `_last_lease_end`; a claim clears them all)
