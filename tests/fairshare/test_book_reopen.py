"""An attempt whose holding ended is never opened again by a stale list of live attempts (pure).

Held-out review: a tenant cancelled its running jobs, and the pass that read the live attempts
before the cancel (then awaited a capacity reading) adopted them again: the tenant was charged
for work that had ended and stood last in the fair order at 0x its share for a job's runtime.
"""

from __future__ import annotations

from datetime import timedelta

from broker.fairshare.book import FairShareBook
from tests.fairshare.test_reclaim_queued import NOW, holding


def test_an_ended_attempt_is_not_reopened() -> None:
    book = FairShareBook(half_life_s=0.0)
    book.started("a-1", holding("mid", 2, 60.0))
    book.started("a-2", holding("mid", 2, 60.0))
    book.ended("a-1", NOW)
    book.adopt("a-1", holding("mid", 2, 60.0))  # adopted from a list read before the end
    assert list(book.live) == ["a-2"]
    book.sync(["a-1", "a-2"], NOW + timedelta(seconds=1))
    assert list(book.live) == ["a-2"]
    book.adopt("a-3", holding("mid", 2, 0.0))  # a new attempt is held as ever
    assert sorted(book.live) == ["a-2", "a-3"]
    book.started("a-1", holding("mid", 2, 0.0))  # started on purpose (the simulator reuses ids)
    assert sorted(book.live) == ["a-1", "a-2", "a-3"]
