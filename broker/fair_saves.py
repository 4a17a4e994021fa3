"""Saving and restoring fair share's state in the store: a refused save or an unreadable row is
logged and retried by the next pass, never an error of the pass."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from broker.fair_reclaim import Reclaimer
from broker.fairshare import Demand, UsageLedger
from broker.fairshare.book import FairShareBook
from broker.store import FairUsage, JobStore, StoreError

log = logging.getLogger("broker.fair_queue")  # (the name operators' log filters know)
K = TypeVar("K")
M = TypeVar("M")


class Saves:
    """What the store holds of one scheduler's usage book and reclaim state: marks of the last
    save, so a pass writes only what changed since."""

    def __init__(self, book: FairShareBook, reclaimer: Reclaimer) -> None:
        self.book = book
        self.reclaimer = reclaimer
        self._usage: tuple[int, int] | None = None
        """(ledger identity, its change count) as last saved to the store."""
        self._budget = 0
        """The reclaimer's change count as last saved to the store."""

    def load(self, store: JobStore, *, mirror: bool = False) -> None:
        """Past use and reclaim's waste budget survive a restart: take back what the store kept
        (`mirror`: an API replica's copy, reclaim's bookings replaced by the store's)."""
        ledger = self.book.ledger
        if restored(store.load_fair_usage, lambda kept: restore_usage(ledger, kept), "fair-share usage"):
            self._usage = self._usage_mark()
        take = self.reclaimer.mirror if mirror else self.reclaimer.restore
        if restored(store.load_reclaim_state, take, "reclaim budget"):
            self._budget = self.reclaimer.changes

    def save(self, store: JobStore) -> None:
        """Save the usage and the budget changed since last saved (a refused save: the next pass retries)."""
        self._usage = save_if_changed(
            self._usage, self._usage_mark(), lambda: store.save_fair_usage(usage_of(self.book.ledger)),
            "fair-share usage",
        )
        budget = self.reclaimer
        self._budget = save_if_changed(
            self._budget, budget.changes, lambda: store.save_reclaim_state(budget.state()), "reclaim budget"
        )

    def save_reclaim(self, store: JobStore) -> None:
        """Store reclaim's budget and bookings now (before a preemption touches any victim);
        raises `StoreError` when refused (the next pass saves them)."""
        changes = self.reclaimer.changes
        store.save_reclaim_state(self.reclaimer.state())
        self._budget = changes

    def _usage_mark(self) -> tuple[int, int]:
        # The ledger is replaced when the half-life changes: its identity is part of the mark.
        ledger = self.book.ledger
        return (id(ledger), ledger.changes)


def restore_usage(ledger: UsageLedger, kept: FairUsage | None) -> None:
    """Take back the ledger kept (under another half-life, carried over)."""
    if kept is None:
        return
    sums = {t: Demand(*v) for t, v in kept.sums.items()}
    if kept.half_life_s == ledger.half_life_s:
        ledger.restore(kept.at_s, sums)
        return
    was = UsageLedger(kept.half_life_s)  # kept under another half-life: carried over
    was.restore(kept.at_s, sums)
    carried = was.with_half_life(ledger.half_life_s).state()
    if carried is not None:
        ledger.restore(*carried)


def usage_of(ledger: UsageLedger) -> FairUsage:
    """The ledger as a store keeps it."""
    state = ledger.state()
    return FairUsage(
        half_life_s=ledger.half_life_s,
        at_s=state[0] if state else 0.0,
        sums={t: (d.accelerators, d.cpus, d.memory_gb) for t, d in (state[1] if state else {}).items()},
    )


def restored(read: Callable[[], K], restore: Callable[[K], None], what: str) -> bool:
    """Restore what the store kept of `what`; False (logged) when the store could not be read."""
    try:
        kept = read()
    except StoreError as exc:
        log.warning("%s not read from the store: %s", what, exc)
        return False
    restore(kept)
    return True


def save_if_changed(saved: M, mark: M, save: Callable[[], None], what: str) -> M:
    """The mark as saved after this pass: `mark` once `save` stored `what`, still `saved` when
    nothing changed or the store refused (logged; kept in memory, the next pass tries again)."""
    if mark == saved:
        return saved
    try:
        save()
    except StoreError as exc:
        log.warning("%s not saved: %s", what, exc)
        return saved
    return mark
