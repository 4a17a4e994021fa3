"""Sites that refused a job's own request (its user data too large for EC2, say): that job goes on
to its other offers and fails only when none is left; no other job is affected (no breaker, no
blocklist entry).

The exclusions are read from the job's stored attempts, so a restart keeps them, and they reach
placement as blocks of this job's decision only: explain and the job's waiting reason show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from adapters.base import AdapterError, RequestError
from broker.burst import BurstInputs
from broker.model import AttemptState, Job, JobState, Offer
from broker.placement import PlacementContext, place
from broker.policy import Policy
from broker.store import JobStore

_REFUSED = f"{RequestError.__name__}: "
"""How a failed attempt's stored error begins when the job's own request was refused."""
PER_PARTITION = "ESLURM_"
"""Slurm's answers about one partition (its MaxTime, its nodes' size) keep the job off that offer
only; any other refusal (the job's user data, its Slurm user) is true of every offer at the site."""


def refused_sites(job: Job, store: JobStore) -> dict[str, str]:
    """Site id, or offer key where the refusal is the offer's own, -> `code: message` of each
    refusal of the job's own request (no store read for a job never tried)."""
    if job.attempts == 0:
        return {}
    refused: dict[str, str] = {}
    for attempt in store.attempts_for(job.id):
        if attempt.state == AttemptState.FAILED and attempt.error.startswith(_REFUSED):
            # The stored error is "RequestError: SITE: CODE: MESSAGE" (`AdapterError.__str__`).
            said = attempt.error.split(": ", 2)[-1]
            one_offer = said.startswith(PER_PARTITION)
            refused.setdefault(attempt.offer.key if one_offer else attempt.site, said)
    return refused


class RefusalMemo:
    """Each job's refusals as of its attempt count: the dispatcher decides a requeued job every
    pass, and its refusals change only with a new attempt (no store read per pass)."""

    def __init__(self, most: int = 10_000) -> None:
        self._seen: dict[str, tuple[int, dict[str, str]]] = {}
        self._most = most

    def of(self, job: Job, store: JobStore) -> dict[str, str]:
        seen = self._seen.get(job.id)
        if seen is None or seen[0] != job.attempts:
            if len(self._seen) >= self._most:
                self._seen.clear()
            seen = self._seen[job.id] = (job.attempts, refused_sites(job, store))
        return seen[1]


def excluding_refusals(
    inputs: BurstInputs, job: Job, store: JobStore, memo: RefusalMemo | None = None
) -> BurstInputs:
    """The job's decision inputs with the sites that refused its own request blocked for it."""
    refused = memo.of(job, store) if memo is not None else refused_sites(job, store)
    if not refused:
        return inputs
    reasons: dict[str, str] = {
        site: f"the job's own request was refused there ({why})" for site, why in refused.items()
    }
    return replace(
        inputs, blocked=inputs.blocked.union(refused), block_reasons={**inputs.block_reasons, **reasons}
    )


def after_own_refusal(
    job: Job, exc: AdapterError, store: JobStore, *, offers: Sequence[Offer], policy: Policy, now: datetime
) -> tuple[JobState, str, str, str]:
    """Where a job goes once a site refused its own request: back to the queue while an offer at
    another site could take it (as admission judges: the catalog, whatever is blocked now), else
    FAILED with every refusal. Returns (state, log event, log format, event message)."""
    refused = refused_sites(job, store)
    said = f"the job's request was refused by {exc.site} ({exc.code}): {exc.message}"
    left = [o for o in offers if o.site not in refused and o.key not in refused]
    if left and place(job.spec, job.tenant, left, policy, PlacementContext(now=now)).unranked:
        return (
            JobState.QUEUED,
            "failover",
            "attempt %d on %s refused for the job's own request: %s; trying its offers elsewhere",
            f"{said}; next: its offers at other sites",
        )
    this = (exc.site, f"{exc.code}: {exc.message}")
    others = [f"{key} ({why})" for key, why in refused.items() if (key.split("/")[0], why) != this]
    if others:
        said += "; also refused by " + ", ".join(others)
    return JobState.FAILED, "attempt_failed", "attempt %d on %s refused for the job's own request: %s", said
