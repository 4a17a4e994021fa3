"""No automatic garbage collections while a simulation runs (its results never depend on when
the collector runs).

A run keeps a large live heap (jobs, placement memos, records) that every collection walks
again: ~2 s of a 14 s policy run on the 8k trace when full collections ran. Inside
`fewer_collections()` what already exists is frozen out of the collector's sight and the
collector does not run on its own: a run makes almost no cyclic garbage (the 8k policy run's
119 young and middle collections at a young threshold of 10,000 freed no object and took ~0.45 s
of its ~7 s), so it is left for the first collection after the block. Should something turn the
collector back on inside, young objects are still collected 10,000 allocations apart, not 700.
The previous settings come back on exit.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 10_000
"""Allocations between young-generation collections during a run if the collector is turned on
inside it (CPython's default: 700)."""

_depth = 0


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Freeze what exists and keep the collector from running on its own until the block ends
    (re-entrant)."""
    global _depth
    if _depth:
        yield
        return
    before, enabled = gc.get_threshold(), gc.isenabled()
    _depth += 1
    gc.freeze()
    gc.set_threshold(YOUNG, before[1], before[2])
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.set_threshold(*before)
        gc.unfreeze()
        _depth -= 1
