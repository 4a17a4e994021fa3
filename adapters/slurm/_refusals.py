"""Which of Slurm's submit refusals are the job's own, not the partition's.

Slurm answers a job larger than every node of its partition (memory, CPUs, GPUs) or longer than the
partition's MaxTime with the same codes as a partition that can run nothing (2014, 2015 …).
The adapter turns the first kind into `RequestError`: that job fails with the reason, and the
partition, which still takes other jobs, is blocked for no one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import AdapterError, RequestError, UnsupportedError
from adapters.slurm._client import SlurmRest
from adapters.slurm._records import node_partitions, parse_gres, slurm_number

JOB_REFUSALS = frozenset({
    "ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE", "ESLURM_TOO_MANY_REQUESTED_CPUS",
    "ESLURM_INVALID_TASK_MEMORY", "ESLURM_INVALID_CPU_COUNT",
    "ESLURM_REQUESTED_PART_CONFIG_UNAVAILABLE", "ESLURM_INVALID_TIME_LIMIT",
})
"""Submit refusals that may be about the job's own size or length."""


def job_refusal(
    exc: UnsupportedError, partition: str, rest: SlurmRest, job: Mapping[str, Any]
) -> RequestError | None:
    """`exc` as the job's own refusal when the job is larger than every node of `partition` or
    longer than its MaxTime (read from slurmrestd now); None for any other refusal."""
    if exc.code not in JOB_REFUSALS:
        return None
    try:
        nodes = rest.request("GET", "nodes").get("nodes") or []
        parts = rest.request("GET", f"partition/{partition}").get("partitions") or []
    except AdapterError:
        return None
    members = [n for n in nodes if partition in node_partitions(n)]
    why = too_large(partition, members, job) or too_long(partition, parts[0] if parts else {}, job)
    return None if why is None else RequestError(exc.site, exc.code, f"{why} ({exc.message})")


def too_large(partition: str, members: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> str | None:
    """Why no node of the partition could ever hold the job (memory, CPUs, GPUs per node), or why
    the partition has too few nodes for a gang; None when it could run."""
    gang = gang_nodes(job)
    if members and gang > len(members):
        return f"the {gang}-node gang needs {gang} nodes; partition {partition} has {len(members)}"
    most_memory = max((int(slurm_number(n.get("real_memory")) or 0) for n in members), default=0)
    most_cpus = max((int(slurm_number(n.get("cpus")) or 0) for n in members), default=0)
    memory_mb, cpus = int(job.get("memory_per_node") or 0), int(job.get("cpus_per_task") or 0)
    if most_memory and memory_mb > most_memory:
        return (f"the job asks {memory_mb} MB of memory per node; partition {partition}'s "
                f"largest node has {most_memory} MB")
    if most_cpus and cpus > most_cpus:
        return f"the job asks {cpus} CPUs per node; partition {partition}'s largest node has {most_cpus}"
    return too_many_gpus(partition, members, job)


def too_many_gpus(partition: str, members: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> str | None:
    """Why no node of the partition has as many GPUs (of the asked type) as the job asks per node."""
    # version-specific: v0.0.38 "gres", v0.0.40+ "tres_per_node"
    asked = parse_gres(job.get("gres") or job.get("tres_per_node"))
    for gtype, count in asked.items():
        held = [parse_gres(n.get("gres")) for n in members]
        most = max((sum(g.values()) if gtype is None else g.get(gtype, 0) for g in held), default=0)
        if most and count > most:  # (no node with the type at all: the site's gres_type is wrong)
            kind = f"{gtype} GPUs" if gtype else "GPUs"
            return (f"the job asks {count} {kind} per node; partition {partition}'s largest node "
                    f"has {most}")
    return None


def too_long(partition: str, record: Mapping[str, Any], job: Mapping[str, Any]) -> str | None:
    """Why the job's time limit is over the partition's MaxTime, or None."""
    maximums = record.get("maximums")
    # version-specific: v0.0.38 "max_time_limit" (minutes), v0.0.40+ "maximums": {"time": …}
    raw = maximums.get("time") if isinstance(maximums, Mapping) else record.get("max_time_limit")
    most, limit = slurm_number(raw), int(job.get("time_limit") or 0)
    if most is None or most < 0 or limit <= most:  # -1: INFINITE as v0.0.38 prints it
        return None
    return (f"the job's time limit of {limit} min (its runtime_estimate x the site's "
            f"time_limit_factor) is over partition {partition}'s MaxTime of {most:g} min")


def gang_nodes(job: Mapping[str, Any]) -> int:
    """How many nodes a submitted job asks for (1 unless a gang's; version-specific fields)."""
    asked = job.get("nodes")
    if isinstance(asked, Sequence) and not isinstance(asked, str) and asked:
        return int(asked[0])
    return int(job.get("minimum_nodes") or 1)
