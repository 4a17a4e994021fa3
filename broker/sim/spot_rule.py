"""The simulator's spot interruptions, under the live broker's `burst.spot_max_interruptions`.

The decision is `broker.dispatch.spot_limit`'s, on the run's own count: a job interrupted that
many times on spot is decided on-demand from then on (`SimState.deciding`, its spec as the live
planner changes it), and one requiring spot fails, as the live attempt handling fails it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from broker.dispatch.spot_limit import required_spot_failure, used_up, without_spot
from broker.model import Offer
from broker.sim.jobs import SimJob
from broker.sim.metrics import GIVE_UP_INTERRUPTIONS
from broker.sim.state import SimState

if TYPE_CHECKING:
    from broker.sim.engine import Engine


def interrupted(eng: Engine, job: SimJob, st: SimState, offer: Offer) -> None:
    """A spot interruption: the job goes back to the queue, from its last checkpoint if it has
    one, off spot once it used up its interruptions; requiring spot it then fails (and after
    `GIVE_UP_INTERRUPTIONS`, which only an unlimited world reaches, it is never finished)."""
    st.rec.interruptions += 1
    if required_spot_failure(job.spec, st.rec.interruptions, eng.policy) is not None:
        st.rec.failed = True
        return
    if st.rec.interruptions >= GIVE_UP_INTERRUPTIONS:
        return
    if st.deciding is None and used_up(st.rec.interruptions, eng.policy):
        # Its shape (placement's memo key) is the spot-allowing one: the new spec gets its own.
        st.deciding = replace(job, spec=without_spot(job.spec), shape=None)
    cp = job.spec.checkpoint
    if cp is not None:  # resume from the last checkpoint written before the interruption
        every = cp.interval.total_seconds()
        ran = eng.t - st.running_since
        st.done_s = min(job.runtime_s, st.done_s + math.floor(ran / every) * every)
    ttl = eng.policy.burst.blocklist_ttl.capacity
    eng.blocklist.block_offer(offer, ttl.total_seconds(), "a spot interruption")
    eng._requeue(job, st)
