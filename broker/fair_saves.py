"""Saving and restoring fair share's state in the store: a refused save or an unreadable row is
logged and retried by the next pass, never an error of the pass."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from broker.store import StoreError

log = logging.getLogger("broker.fair_queue")  # (the name operators' log filters know)
K = TypeVar("K")
M = TypeVar("M")


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
