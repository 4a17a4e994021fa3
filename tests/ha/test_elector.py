"""The elector on its own, on the real PostgreSQL: who it unseats, and when it steps down."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from broker.clock import SystemClock
from broker.ha.election import LOCK_KEY, Elector, Timing
from broker.store import PostgresStore, StoreError

TIMING = Timing(lease_s=1.0, renew_s=0.1)


class Terms:
    def __init__(self) -> None:
        self.elected: list[int] = []
        self.deposed: list[str] = []
        self.changed = threading.Event()

    def on_elected(self, epoch: int) -> None:
        self.elected.append(epoch)
        self.changed.set()

    def on_deposed(self, reason: str) -> None:
        self.deposed.append(reason)
        self.changed.set()


def wait(what: str, check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_dsn)
    yield s
    s.close()


@pytest.fixture
def other_database(pg_server: str) -> Iterator[str]:
    name = f"szb_ha_other_{time.monotonic_ns()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(pg_server, dbname=name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def elector(dsn: str, store: PostgresStore, terms: Terms) -> Elector:
    return Elector(
        dsn,
        store,
        on_elected=terms.on_elected,
        on_deposed=terms.on_deposed,
        timing=TIMING,
        clock=SystemClock(),
    )


def test_a_scheduler_of_another_database_is_neither_a_rival_nor_unseated(
    pg_dsn: str, store: PostgresStore, other_database: str
) -> None:
    with psycopg.connect(other_database, autocommit=True) as elsewhere:
        elsewhere.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEY)  # another broker's leader
        leader_terms, standby_terms = Terms(), Terms()
        leader = elector(pg_dsn, store, leader_terms)
        leader.start()
        standby_store = PostgresStore(pg_dsn)
        standby = elector(pg_dsn, standby_store, standby_terms)
        try:
            wait("elected in its own database", lambda: leader_terms.elected)
            standby.start()  # it looks for this database's holder every round
            time.sleep(TIMING.lease_s * 4)
            assert elsewhere.execute("SELECT 1").fetchone() == (1,), "another database's leader was unseated"
            assert not standby_terms.elected and not leader_terms.deposed
        finally:
            standby.stop()
            leader.stop()
            standby_store.close()


def test_a_lock_holder_that_never_claims_the_lease_is_unseated(pg_dsn: str, store: PostgresStore) -> None:
    stuck = psycopg.connect(pg_dsn, autocommit=True)
    stuck.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEY)  # paused between lock and claim
    terms = Terms()
    e = elector(pg_dsn, store, terms)
    e.start()
    try:
        wait("the stuck holder was terminated and the standby elected", lambda: terms.elected)
        with pytest.raises(psycopg.OperationalError):
            stuck.execute("SELECT 1")
    finally:
        e.stop()
        stuck.close()


def test_a_leader_whose_epoch_moved_on_steps_down_and_stops_acting(pg_dsn: str, store: PostgresStore) -> None:
    terms = Terms()
    e = elector(pg_dsn, store, terms)
    e.start()
    try:
        wait("elected", lambda: terms.elected)
        assert e.may_act()
        # Another holder claims a newer epoch (as a standby does after unseating a paused one).
        rival = PostgresStore(pg_dsn)
        try:
            rival.claim_leadership("rival", None, 30.0, SystemClock().now())
        finally:
            rival.close()
        wait("deposed", lambda: terms.deposed)
        assert not e.may_act() and "newer epoch" in terms.deposed[0]
    finally:
        e.stop()


class Skewed:
    """A host clock `by` ahead (negative: behind) of this one's."""

    def __init__(self, by: timedelta) -> None:
        self.by = by

    def now(self) -> datetime:
        return SystemClock().now() + self.by


def test_a_standby_whose_clock_runs_ahead_leaves_a_renewing_leader_alone(
    pg_dsn: str, store: PostgresStore
) -> None:
    """A standby read the leader's lease, written by the leader's clock, against its own: an hour
    ahead, it took every lease for expired and terminated the healthy leader's session."""
    leader_terms, standby_terms = Terms(), Terms()
    leader = elector(pg_dsn, store, leader_terms)
    standby_store = PostgresStore(pg_dsn)
    standby = Elector(pg_dsn, standby_store, on_elected=standby_terms.on_elected,
                      on_deposed=standby_terms.on_deposed, timing=TIMING, clock=Skewed(timedelta(hours=1)))
    leader.start()
    try:
        wait("elected", lambda: leader_terms.elected)
        standby.start()
        time.sleep(TIMING.lease_s * 5)
        assert not leader_terms.deposed, leader_terms.deposed
        assert not standby_terms.elected and leader.may_act()
    finally:
        standby.stop()
        leader.stop()
        standby_store.close()


def test_a_standby_whose_clock_runs_behind_still_unseats_a_leader_that_stopped_renewing(
    pg_dsn: str, store: PostgresStore
) -> None:
    """An hour behind, a standby read a dead lease as valid for another hour."""
    stuck = psycopg.connect(pg_dsn, autocommit=True)
    stuck.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEY)  # a leader paused after its claim
    store.claim_leadership("paused", stuck.info.backend_pid, TIMING.lease_s, SystemClock().now())
    terms = Terms()
    standby_store = PostgresStore(pg_dsn)
    standby = Elector(pg_dsn, standby_store, on_elected=terms.on_elected, on_deposed=terms.on_deposed,
                      timing=TIMING, clock=Skewed(-timedelta(hours=1)))
    standby.start()
    try:
        wait("the paused leader was unseated and the standby elected", lambda: terms.elected, timeout=20)
        with pytest.raises(psycopg.OperationalError):
            stuck.execute("SELECT 1")
    finally:
        standby.stop()
        standby_store.close()
        stuck.close()


def test_a_leader_frozen_inside_a_fenced_write_does_not_hold_up_the_takeover(
    pg_dsn: str, store: PostgresStore
) -> None:
    """Found by an HA review: a leader SIGSTOPped between a fenced write's `FOR SHARE` fence
    check and its commit kept the leadership row locked on its store connection. The standby
    ended the frozen elector session, took the advisory lock, then waited in its claim's
    UPDATE for as long as the frozen process lived: no scheduler led, none could."""
    old_terms, new_terms = Terms(), Terms()
    old_store = PostgresStore(pg_dsn)
    old = elector(pg_dsn, old_store, old_terms)
    old.start()
    standby: Elector | None = None
    try:
        wait("the first scheduler leads", lambda: old_terms.elected)
        old_store.set_fence(old_terms.elected[-1])
        frozen = old_store._tx(fenced=True)  # the fence check ran; the commit never comes
        frozen.__enter__()
        old.stop()  # stops renewing (its elector session is left for the standby to end)
        standby = elector(pg_dsn, store, new_terms)
        standby.start()
        wait("the standby leads", lambda: new_terms.elected, timeout=TIMING.lease_s * 10)
        assert new_terms.elected[-1] > old_terms.elected[-1]
        with pytest.raises(StoreError):  # the frozen write was ended, not committed
            frozen.__exit__(None, None, None)
    finally:
        if standby is not None:
            standby.stop()
        old.stop()
        old_store.close()


def test_a_leader_whose_session_ends_while_it_lives_on_is_not_overlapped(
    pg_dsn: str, store: PostgresStore
) -> None:
    """Review: with only the leader's election session ended (pg_terminate_backend, a proxy, an
    idle timeout), a standby took the lock and acted within milliseconds, while the old leader,
    alive, still acted on the backends until its next renewal (calls seen 0.33 s into the new
    term). The new leader now starts acting only once the old lease has run out by its clock."""
    first_terms, second_terms = Terms(), Terms()
    first = elector(pg_dsn, store, first_terms)
    first.start()
    wait("the first is elected", lambda: first_terms.elected)
    second = elector(pg_dsn, store, second_terms)
    second.start()
    try:
        time.sleep(3 * TIMING.renew_s)  # the standby watches the renewing leader
        overlap: list[float] = []
        lock = first._conn
        assert lock is not None
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lock.info.backend_pid,))
        ended = time.monotonic()
        while not second_terms.elected:
            assert time.monotonic() - ended < 15, "the standby never took over"
            time.sleep(0.005)
        while time.monotonic() - ended < TIMING.lease_s + 0.5:  # the new term under way
            if first.may_act() and second.may_act():
                overlap.append(time.monotonic() - ended)
            time.sleep(0.005)
        assert not overlap, f"both could act on the backends {overlap[0]:.2f}s after the session ended"
        assert second.may_act() and not first.may_act()
    finally:
        first.stop()
        second.stop()


def test_a_write_cut_off_from_the_database_holds_up_the_claim_for_far_less_than_a_lease(
    pg_dsn: str, store: PostgresStore
) -> None:
    """Found by a review of issue 13: a leader cut off from PostgreSQL mid-write (a relay that stops
    forwarding) kept the lease row locked; the standby that took the lock waited a whole lease
    behind that write before ending it, and took over 7.25 s after the partition (lease 3 s)."""
    timing = Timing(lease_s=4.0, renew_s=0.1)
    old_terms, new_terms = Terms(), Terms()
    old_store = PostgresStore(pg_dsn)
    old = Elector(pg_dsn, old_store, on_elected=old_terms.on_elected, on_deposed=old_terms.on_deposed,
                  timing=timing, clock=SystemClock())
    old.start()
    standby: Elector | None = None
    try:
        wait("the first scheduler leads", lambda: old_terms.elected)
        old_store.set_fence(old_terms.elected[-1])
        frozen = old_store._tx(fenced=True)  # the fence check ran; the commit never comes
        frozen.__enter__()
        old.stop()  # its lock is free at once: what holds the standby up is the write alone
        standby = Elector(pg_dsn, store, on_elected=new_terms.on_elected, on_deposed=new_terms.on_deposed,
                          timing=timing, clock=SystemClock())
        began = time.monotonic()
        standby.start()
        wait("the standby claims the lease", lambda: standby is not None and standby.epoch is not None)
        claimed = time.monotonic() - began
        assert claimed < timing.lease_s / 2, f"the claim waited {claimed:.2f} s behind the cut-off write"
        with pytest.raises(StoreError):  # the write was ended, not committed
            frozen.__exit__(None, None, None)
    finally:
        if standby is not None:
            standby.stop()
        old.stop()
        old_store.close()


def test_deployments_in_two_schemas_of_one_database_each_keep_their_leader(pg_dsn: str) -> None:
    """Found by a held-out review: one advisory lock per database made the deployment of another
    schema's candidates unseat this one's leader (19 terms in 40 s)."""
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        for schema in ("dep_a", "dep_b"):
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    dsns = [make_conninfo(pg_dsn, options=f"-csearch_path={s}") for s in ("dep_a", "dep_b")]
    stores = [PostgresStore(d) for d in dsns for _ in range(2)]
    terms = [Terms() for _ in stores]
    electors = [elector(d, st, t) for d, st, t in zip([dsns[0], dsns[0], dsns[1], dsns[1]], stores, terms,
                                                        strict=True)]
    try:
        for e in electors:
            e.start()
        wait("a leader in each schema", lambda: bool(terms[0].elected or terms[1].elected)
             and bool(terms[2].elected or terms[3].elected))
        time.sleep(TIMING.lease_s * 5)
        assert [len(t.elected) for t in terms].count(1) == 2, [t.elected for t in terms]
        assert not any(t.deposed for t in terms), [t.deposed for t in terms]
    finally:
        for e in electors:
            e.stop()
        for st in stores:
            st.close()


def test_a_leader_keeps_its_lock_session_alive_under_an_idle_session_timeout(
    pg_dsn: str, store: PostgresStore
) -> None:
    """Found by a held-out review: with idle_session_timeout set, the server ended the leader's
    idle lock session every period, and a standby took over each time."""
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        name = admin.info.dbname
        setting = sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '500ms'")
        admin.execute(setting.format(sql.Identifier(name)))
    leader_terms, standby_terms = Terms(), Terms()
    leader = elector(pg_dsn, store, leader_terms)
    standby_store = PostgresStore(pg_dsn)
    standby = elector(pg_dsn, standby_store, standby_terms)
    try:
        leader.start()
        wait("elected", lambda: leader_terms.elected)
        standby.start()
        time.sleep(TIMING.lease_s * 5)
        assert not standby_terms.elected, standby_terms.elected
        assert not leader_terms.deposed, leader_terms.deposed
    finally:
        standby.stop()
        leader.stop()
        standby_store.close()
