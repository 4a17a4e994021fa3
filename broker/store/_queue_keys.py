"""The two columns a deep queue is read by: a job's priority as a rank, and its queue group.

A group is what the job asks of hardware (accelerators, count, nodes, residency): a tenant's jobs
waiting for one kind of hardware must not hide its jobs that another kind could start, so a
deep queue's pass reads the first jobs of each (tenant, group), not of each tenant.
"""

from __future__ import annotations

from broker.jobspec import JobSpec
from broker.store._rows import read_spec

PRIORITY_RANKS = {"high": 0, "normal": 1, "low": 2}
"""`jobs.priority_rank`: a job's priority class as a sort key, first first."""

UNGROUPED = ""
"""`jobs.queue_group` of a row no current broker wrote (an older one's, until it is filled in)."""


def queue_keys(spec: JobSpec) -> tuple[int, str]:
    """(priority rank, queue group) of a job's spec."""
    acc = spec.resources.accelerators
    kinds = "|".join(sorted(acc.any_of)) or ("any" if acc.count else "cpu")
    group = f"{kinds} x{acc.count} n{spec.resources.nodes} {spec.data_residency.value}"
    return PRIORITY_RANKS.get(spec.priority.value, 1), group


def queue_keys_of_text(text: str) -> tuple[int, str] | None:
    """The keys of a stored spec; None when it does not read as one (left to the quarantine)."""
    spec = read_spec(text)
    return queue_keys(spec) if isinstance(spec, JobSpec) else None
