"""The two columns a deep queue is read by: a job's priority as a rank, and its queue group.

A group is what placement filters a job's offers by (`queue_keys`): a tenant's jobs waiting for
one kind of hardware must not hide its jobs that another kind could start, so a deep queue's
pass reads the first jobs of each (tenant, group), not of each tenant.
"""

from __future__ import annotations

import hashlib

from broker.jobspec import JobSpec
from broker.store._rows import read_spec

PRIORITY_RANKS = {"high": 0, "normal": 1, "low": 2}
"""`jobs.priority_rank`: a job's priority class as a sort key, first first."""

UNGROUPED = ""
"""`jobs.queue_group` of a row no current broker wrote (an older one's, until a pass fills it in)."""
MAX_GROUP = 200
"""Longer groups (many accelerator names) are cut and end in a hash of the whole."""


def queue_keys(spec: JobSpec) -> tuple[int, str]:
    """(priority rank, queue group) of a job's spec. The group holds what placement filters offers
    by (hardware per node, nodes, residency, spot, price cap); labels, which compliance rules may
    read, are not in it."""
    res, acc = spec.resources, spec.resources.accelerators
    kinds = "|".join(sorted(acc.any_of)) or ("any" if acc.count else "cpu")
    cap = "" if spec.max_price_per_hour is None else f" <{spec.max_price_per_hour:g}"
    group = (f"{kinds} x{acc.count} n{res.nodes} c{res.cpus:g} m{res.memory_gb:g} g{acc.min_memory_gb:g} "
             f"{spec.data_residency.value} {spec.spot.value}{cap}")
    if len(group) > MAX_GROUP:  # an index entry has a size limit (8 KB on PostgreSQL)
        group = group[:MAX_GROUP - 17] + "#" + hashlib.sha256(group.encode()).hexdigest()[:16]
    return PRIORITY_RANKS.get(spec.priority.value, 1), group


def queue_keys_of_text(text: str) -> tuple[int, str] | None:
    """The keys of a stored spec; None when it does not read as one (left to the quarantine)."""
    spec = read_spec(text)
    return queue_keys(spec) if isinstance(spec, JobSpec) else None
