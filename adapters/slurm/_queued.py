"""A submit Slurm answered with an error *and* a job id: queued to start later, or to be dropped.

slurmrestd 22.05 queues some jobs it reports an error for. A node reserved for others, draining
or down (2068), a maintenance reservation (2118) or a partition taken down (2101) only delay
the job: it pends with its reason and starts once that is over, so the job id is the attempt's.
Others (a time limit over the partition's MaxTime, 2015: PENDING PartitionConfig) never start
as submitted: that job is cancelled and the error raised, so no Slurm job outlives the refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from adapters.base import AdapterError
from adapters.slurm._client import SlurmRest
from adapters.slurm._errors import error_for
from adapters.slurm._owners import delete_job

log = logging.getLogger(__name__)

QUEUED_ANYWAY = frozenset({2068, 2101, 2118})
"""Submit errors under which the job Slurm queued starts by itself once the cause is over."""


def submitted_job_id(rest: SlurmRest, reply: Mapping[str, Any]) -> str:
    """The job id of a submit reply; raises its error when Slurm refused (or queued a job that
    would never start, cancelled first)."""
    job_id = reply.get("job_id")
    coded = [(_code(e), e) for e in reply.get("errors") or [] if isinstance(e, Mapping)]
    coded = [(c, e) for c, e in coded if c != 0]
    if not coded:
        if job_id is None:
            raise AdapterError(rest.site, "NoJobId", f"submit answered without a job id: {reply}")
        return str(job_id)
    code, first = coded[0]
    said = str(first.get("error") or first.get("description") or "")
    if job_id is not None and code in QUEUED_ANYWAY:
        log.info("site %s: Slurm queued job %s but said: %s (error %d)", rest.site, job_id, said[:300], code)
        return str(job_id)
    if job_id is not None:
        try:
            delete_job(rest, str(job_id))
        except AdapterError as exc:  # reconciliation cancels it later (it carries our marks)
            log.warning("site %s: could not cancel job %s Slurm queued with error %d: %s",
                        rest.site, job_id, code, exc)
    raise error_for(rest.site, code, f"POST job/submit: {said}")


def _code(error: Mapping[str, Any]) -> int:
    for key in ("error_code", "error_number", "errno"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return -1
