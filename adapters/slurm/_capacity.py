"""Capacity of a Slurm partition and the expected wait of a new job there. Pure.

Expected wait model (`estimate_wait_s`)
---------------------------------------
For a new job needing ``count`` accelerators in a partition with ``total`` usable and
``free`` idle ones, given the running jobs there (accelerators, seconds left until their time
limit) and the pending ones in line for the partition's units (accelerators, time limit, and
Slurm's own expected start when the backfill scheduler has computed one). A held job, one
deferred to a begin time, waiting on a dependency or blocked by a limit of its own is in no line
(`waits_for_capacity`): it starts no earlier for units freeing up, so it delays no one.

1. ``count > total``: it can never start (None). ``count == 0``: no wait.
2. Pending jobs with a Slurm start estimate are taken as Slurm sees them: the new job, queued
   behind them (FIFO, no backfill credit), cannot start before the last of them starts, ``S``.
   At ``S`` the running jobs still going and the pending ones started by then (until start +
   time limit) become the "running" set, and the estimate continues from ``S`` with the
   remaining (unestimated) pending jobs: ``wait = S + estimate(at S)``.
3. No pending jobs in line: ``0`` if ``free >= count``, else the moment enough running jobs have
   reached their time limit that ``count`` accelerators are free (exact for time limits).
4. Pending jobs without Slurm estimates: the backlog of accelerator-seconds ahead of the job,
   ``sum(running gpus x seconds left) + sum(pending gpus x time limit)``, spread over the
   partition's ``total`` accelerators (a fluid approximation), but never less than step 3's
   release time.

Time limits over-estimate real run times, so the estimate is an upper-leaning guess; Slurm's
estimates (step 2) use the same limits. Jobs with no time limit count as
``unlimited_job_hours`` (default 24). CPU partitions run the same model in CPU cores.

The partition-level figure the broker sees (`PartitionCapacity.expected_wait_s`,
`partition_wait_s`) is the wait of the smallest job that does not fit now (``free + 1``
units, capped at ``total``): the broker only consults it for jobs that do not fit, so it is a
lower bound for them; `SlurmAdapter.expected_wait_s(partition, count, now)` gives the exact
model figure for one size.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from adapters.slurm._config import PartitionConfig, default_gres_type
from adapters.slurm._records import (
    SLURM_STATES,
    array_tasks,
    decode_marks,
    job_gpus,
    job_nodes,
    job_state_name,
    node_partitions,
    node_usable,
    parse_gres,
    slurm_number,
    waits_for_capacity,
)
from broker.model import AttemptState


class RunningWork(NamedTuple):
    gpus: int
    remaining_s: float
    """Seconds until the job's time limit (its latest end)."""
    own: bool = False
    """The job carries this broker's marks (the broker knows it as one of its attempts)."""
    job_id: str = ""
    """Slurm's job id (an attempt's backend id)."""


class PendingWork(NamedTuple):
    gpus: int
    limit_s: float
    """Its time limit: how long it may hold the accelerators once started."""
    expected_start_s: float | None = None
    """Slurm's expected start, seconds from now (backfill scheduler), when known."""
    priority: float = 0
    """Slurm's priority (its order among jobs without an expected start)."""
    job_id: str = ""
    """Slurm's job id when the job is this broker's (its attempt's backend id), else ""."""


def slurm_order(pending: Sequence[PendingWork]) -> list[PendingWork]:
    """Pending work in the order Slurm starts it, as far as a reading tells: by Slurm's expected
    start where it gives one, then by priority."""
    return sorted(pending, key=lambda p: (p.expected_start_s is None, p.expected_start_s or 0.0, -p.priority))


def estimate_wait_s(
    total: int,
    free: int,
    count: int,
    running: Sequence[RunningWork],
    pending: Sequence[PendingWork] = (),
) -> float | None:
    """Seconds until a new job needing `count` accelerators can start (see the module docstring).

    None when it can never start (more than `total`).
    """
    if count > total:
        return None
    if count <= 0:
        return 0.0
    known = [p for p in pending if p.expected_start_s is not None]
    unknown = [p for p in pending if p.expected_start_s is None]
    if known:
        start = max(0.0, max(float(p.expected_start_s or 0.0) for p in known))
        active = [RunningWork(r.gpus, r.remaining_s - start) for r in running if r.remaining_s > start]
        for p in known:
            end = max(0.0, float(p.expected_start_s or 0.0)) + p.limit_s
            if end > start:
                active.append(RunningWork(p.gpus, end - start))
        free_then = max(0, total - sum(r.gpus for r in active))
        rest = estimate_wait_s(total, free_then, count, active, unknown)
        return None if rest is None else start + rest
    release = _release_time(total, free, count, running)
    if not unknown:
        return release
    backlog = sum(r.gpus * max(0.0, r.remaining_s) for r in running)
    backlog += sum(p.gpus * max(0.0, p.limit_s) for p in unknown)
    return max(backlog / total, release)


def _release_time(total: int, free: int, count: int, running: Sequence[RunningWork]) -> float:
    """When `count` accelerators are free if running jobs end at their limits (no queue)."""
    if free >= count:
        return 0.0
    available = free
    for job in sorted(running, key=lambda r: r.remaining_s):
        available += job.gpus
        if available >= count:
            return max(0.0, job.remaining_s)
    # The running jobs do not explain the busy accelerators (e.g. a node drained meanwhile):
    # fall back to the fluid backlog.
    return sum(r.gpus * max(0.0, r.remaining_s) for r in running) / max(1, total)


def partition_wait_s(state: PartitionState) -> float | None:
    """The partition's headline wait: for the smallest job that does not fit right now. None
    when no job can start there (no usable units: every node drained, say), never 0."""
    if state.total <= 0:
        return None
    count = min(state.total, state.free + 1) if state.free < state.total else 1
    return estimate_wait_s(state.total, state.free, count, state.running, state.pending)


# ------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class PartitionState:
    """What one capacity read learned about a partition (units: accelerators, or CPU cores)."""

    config: PartitionConfig
    total: int
    free: int
    max_per_node: int
    cpus_per_node: float
    memory_gb_per_node: float
    running: tuple[RunningWork, ...]
    pending: tuple[PendingWork, ...]
    problem: str = ""
    """Why the partition can never have capacity as configured ("" when it can): the policy and
    the cluster disagree on its name or on its nodes' gres type."""
    node_free: tuple[int, ...] = ()
    """Free units of each usable node, most first."""
    stranded: tuple[RunningWork, ...] = ()
    """Running jobs wholly on nodes that take no new work (draining, reserved for others): what
    they free no new job can use, so they are not in `running` (the wait model's releases)."""


def config_problem(part: PartitionConfig, members: Sequence[Mapping[str, Any]], gtype: str | None) -> str:
    """A partition the policy names that has no nodes in Slurm, or whose nodes carry accelerators
    of another gres type than the one counted: it reads 0 of 0 for good, and its jobs wait."""
    if not members:
        return (f"partition {part.name} has no nodes in Slurm (no such partition in slurm.conf?); "
                "its jobs wait until the policy's partition name matches")
    types = sorted({t for n in members for t in parse_gres(n.get("gres")) if t})
    if part.accelerator is None or gtype is None or not types or gtype in types:
        return ""
    return (f"partition {part.name}'s nodes carry gres gpu:{', gpu:'.join(types)}, not gpu:{gtype} "
            f"(the site's gres_type/gres_types for {part.accelerator}); its jobs wait until they match")


def gres_type(part: PartitionConfig, members: Sequence[Mapping[str, Any]],
              seen: MutableMapping[str, str]) -> str | None:
    """The gres type counting this partition's accelerators: configured, seen, or the default."""
    if part.accelerator is None:
        return None
    if part.gres_type:
        return part.gres_type
    types = {t for n in members for t in parse_gres(n.get("gres")) if t}
    if len(types) == 1:
        seen[part.name] = types.pop()
    return seen.get(part.name, default_gres_type(part.accelerator))


@dataclass
class _NodeUnits:
    """Units (accelerators of the partition's gres type, or CPU cores) of a partition's usable
    nodes, and the largest node's CPUs and memory."""

    totals: list[int]
    frees: list[int]
    cpus: float
    mem: float

    @classmethod
    def read(
        cls, part: PartitionConfig, members: Sequence[Mapping[str, Any]], gtype: str | None
    ) -> _NodeUnits:
        out = cls([], [], 0.0, 0.0)
        for node in members:
            node_cpus = slurm_number(node.get("cpus")) or 0.0
            out.cpus = max(out.cpus, node_cpus)
            out.mem = max(out.mem, (slurm_number(node.get("real_memory")) or 0.0) / 1024)
            if part.accelerator is None:
                count = int(node_cpus)
                in_use = int(slurm_number(node.get("alloc_cpus")) or 0)
            else:
                count = parse_gres(node.get("gres")).get(gtype, 0)
                in_use = parse_gres(node.get("gres_used")).get(gtype, 0)
            if node_usable(node):
                out.totals.append(count)
                out.frees.append(max(0, count - in_use))
        return out


def read_partitions(
    partitions: Mapping[str, PartitionConfig],
    nodes: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    now_s: float,
    *,
    unlimited_s: float,
    gres_seen: MutableMapping[str, str],
    broker_id: str = "",
) -> dict[str, PartitionState]:
    """Usable/free units and the queue per partition from slurmrestd's nodes and jobs."""
    states: dict[str, PartitionState] = {}
    for part in partitions.values():
        members = [n for n in nodes if part.name in node_partitions(n)]
        gtype = gres_type(part, members, gres_seen)
        sizes = _NodeUnits.read(part, members, gtype)
        closed = {str(n.get("name")) for n in members if not node_usable(n)}
        running: list[RunningWork] = []
        stranded: list[RunningWork] = []
        pending: list[PendingWork] = []
        for job in jobs:
            if part.name not in str(job.get("partition") or "").split(","):
                continue
            name = job_state_name(job)
            state = SLURM_STATES.get(name)
            units = job_gpus(job) if part.accelerator else int(slurm_number(job.get("cpus")) or 1)
            if not units:
                continue
            if state is AttemptState.RUNNING:
                end = slurm_number(job.get("end_time"))
                remaining = (end - now_s) if end else unlimited_s
                work = RunningWork(units, max(0.0, min(remaining, unlimited_s)), _own(job, broker_id),
                                   str(job.get("job_id") or ""))
                on = set(job_nodes(job))
                (stranded if on and on <= closed else running).append(work)
            elif state is AttemptState.PENDING and waits_for_capacity(job):
                limit = slurm_number(job.get("time_limit"))
                limit_s = limit * 60 if limit else unlimited_s
                start = slurm_number(job.get("start_time"))
                expected = max(0.0, start - now_s) if start else None
                if expected is not None and expected > 366 * 86400:
                    expected = None  # "never" placeholders
                priority = slurm_number(job.get("priority")) or 0.0
                mine = str(job.get("job_id") or "") if _own(job, broker_id) else ""
                # A job array's pending tasks: Slurm's start is its first's, the rest follow it.
                pending.append(PendingWork(units, limit_s, expected, priority, mine))
                pending.extend([PendingWork(units, limit_s, None, priority, mine)] * (array_tasks(job) - 1))
        states[part.name] = PartitionState(
            part, sum(sizes.totals), sum(sizes.frees), max(sizes.totals, default=0), sizes.cpus, sizes.mem,
            tuple(running), tuple(pending), config_problem(part, members, gtype),
            tuple(sorted(sizes.frees, reverse=True)), tuple(stranded),
        )
    return states


def _own(job: Mapping[str, Any], broker_id: str) -> bool:
    """Does the job carry this broker's marks (one of its attempts)?"""
    return bool(broker_id) and decode_marks(job.get("comment")).get("broker") == broker_id
