"""How many times a job was interrupted on spot, against `burst.spot_max_interruptions`.

The rule itself (`used_up`, `without_spot`, `required_spot_failure`) is pure, so the simulator
(`broker.sim.spot_rule`) applies the live broker's decision to its own interruption counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.model import Attempt, AttemptState, Job, JobSpec, SpotMode
from broker.policy import Policy

if TYPE_CHECKING:  # (a type only: the simulator imports this module, and needs no store)
    from broker.store import JobStore


def spot_interruptions(job: Job, store: JobStore, *, ending: Attempt | None = None) -> int:
    """The job's attempts a cloud ended as preempted while on a spot offer; `ending`, an attempt
    whose preemption is being recorded now, counts whatever its stored state."""
    others = (a for a in store.attempts_for(job.id) if ending is None or a.id != ending.id)
    return sum(1 for a in others if a.state == AttemptState.PREEMPTED and a.offer.spot) + (ending is not None)


def used_up(interruptions: int, policy: Policy) -> bool:
    """Whether `interruptions` on spot reach the policy's `burst.spot_max_interruptions`."""
    return interruptions >= policy.burst.spot_max_interruptions


def off_spot(job: Job, policy: Policy, store: JobStore) -> bool:
    """Whether the job used up its spot interruptions: it runs on-demand from now on. (Its
    attempt count bounds its interruptions, so most jobs cost no store read.)"""
    limit = policy.burst.spot_max_interruptions
    return job.attempts >= limit and used_up(spot_interruptions(job, store), policy)


def without_spot(spec: JobSpec) -> JobSpec:
    """The spec a job allowing spot is decided with once `off_spot`: on-demand only."""
    return spec.model_copy(update={"spot": SpotMode.NEVER}) if spec.spot == SpotMode.ALLOWED else spec


def required_spot_failure(spec: JobSpec, interruptions: int, policy: Policy) -> str | None:
    """Why a job requiring spot fails at its `interruptions`-th spot interruption (None: it is
    requeued, as every other preempted job)."""
    if spec.spot != SpotMode.REQUIRED or not used_up(interruptions, policy):
        return None
    limit = policy.burst.spot_max_interruptions
    return f"interrupted {limit} times on spot (burst.spot_max_interruptions); it requires spot"
