"""What one Slurm cluster offers: per-partition capacity, offers and expected waits.

`PartitionReads` reads nodes and the shared job table (`adapters.slurm._jobs`) into
`PartitionState`s (`adapters.slurm._capacity`) and turns them into the broker's
`CapacitySnapshot` and `Offer`s; `SlurmAdapter` delegates its capacity calls here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.base import ConfigError
from adapters.slurm._capacity import (
    PartitionState,
    estimate_wait_s,
    gres_type,
    partition_wait_s,
    read_partitions,
    slurm_order,
)
from adapters.slurm._client import SlurmRest
from adapters.slurm._config import PartitionConfig
from adapters.slurm._jobs import JobTable
from adapters.slurm._records import node_partitions
from broker.model import CapacitySnapshot, Offer, PartitionCapacity, SiteId

log = logging.getLogger(__name__)


class PartitionReads:
    """Capacity, offers and expected waits of the configured partitions, read from slurmrestd."""

    def __init__(
        self,
        site: SiteId,
        rest: SlurmRest,
        jobs: JobTable,
        partitions: Mapping[str, PartitionConfig],
        *,
        broker_id: str,
        cpu_price: float,
        currency: str,
        unlimited_s: float,
    ) -> None:
        self.site = site
        self.rest = rest
        self.jobs = jobs
        self.partitions = partitions
        self.broker_id = broker_id
        self.cpu_price = cpu_price
        self.currency = currency
        self.unlimited_s = unlimited_s
        self._gres_seen: dict[str, str] = {}
        self._last_read: tuple[datetime, dict[str, PartitionState]] | None = None
        self._told: set[str] = set()  # partition problems already logged

    def capacity(self, now: datetime) -> CapacitySnapshot:
        """Free and total units, queued and running work of every partition."""
        states = self.read(now)
        parts = tuple(
            PartitionCapacity(
                name=s.config.name,
                accelerator=s.config.accelerator,
                total=s.total,
                free=s.free,
                queued_jobs=len(s.pending),
                queued_accelerator_hours=sum(p.gpus * p.limit_s for p in s.pending) / 3600,
                running_accelerator_hours_left=sum(r.gpus * max(0.0, r.remaining_s)
                                                   for r in s.running) / 3600,
                expected_wait_s=partition_wait_s(s),
                releases=tuple(sorted((r.remaining_s, r.gpus) for r in s.running if not r.own)),
                free_by_node=s.node_free,
                stranded=tuple(r.job_id for r in s.stranded if r.own and r.job_id),
                queued=tuple((p.gpus, p.limit_s, p.job_id) for p in slurm_order(s.pending)),
            )
            for s in states.values()
        )
        started = tuple(r.job_id for s in states.values() for r in (*s.running, *s.stranded)
                        if r.own and r.job_id)
        return CapacitySnapshot(site=self.site, taken_at=now, partitions=parts, started=started)

    def expected_wait_s(self, partition: str, count: int, now: datetime) -> float | None:
        """Estimated seconds before a job needing `count` units starts in `partition`.

        Reuses the read of the last `capacity`/`offers` call made with the same `now`.
        """
        cached = self._last_read
        states = cached[1] if cached is not None and cached[0] == now else self.read(now)
        if partition not in states:
            raise ConfigError(self.site, "UnknownPartition", f"partition {partition!r} not configured")
        s = states[partition]
        return estimate_wait_s(s.total, s.free, count, s.running, s.pending)

    def offers(self, now: datetime) -> Sequence[Offer]:
        """One offer per partition with usable nodes (a whole node's accelerators)."""
        result = []
        for s in self.read(now).values():
            accel = s.config.accelerator
            if accel is not None and s.total == 0:
                continue  # no usable nodes carry this partition's accelerators right now
            wait = estimate_wait_s(s.total, s.free, 1, s.running, s.pending)
            result.append(Offer(
                site=self.site,
                instance_type=s.config.name,
                accelerator=accel,
                count=s.max_per_node if accel else 0,
                price_per_hour=(s.config.price_per_accelerator_hour if accel
                                else self.cpu_price or s.config.price_per_accelerator_hour),
                currency=self.currency,
                cpus=s.cpus_per_node,
                memory_gb=s.memory_gb_per_node,
                accelerator_memory_gb=s.config.accelerator_memory_gb,
                free=s.free,
                expected_wait_s=wait if wait is not None else 0.0,
                price_read_at=now,
            ))
        return result

    def read(self, now: datetime) -> dict[str, PartitionState]:
        """Every configured partition's state as of now (kept for `expected_wait_s` at the same now)."""
        nodes = self._nodes()
        jobs = list(self.jobs.read().values())
        states = read_partitions(self.partitions, nodes, jobs, now.timestamp(), unlimited_s=self.unlimited_s,
                                 gres_seen=self._gres_seen, broker_id=self.broker_id)
        self._last_read = (now, states)
        for problem in {s.problem for s in states.values()} - self._told - {""}:
            self._told.add(problem)  # once per broker: the capacity is read every pass
            log.warning("site %s: %s", self.site, problem)
        return states

    def _nodes(self) -> list[Mapping[str, Any]]:
        return list(self.rest.request("GET", "nodes").get("nodes") or [])

    def gres_type_for_submit(self, part: PartitionConfig) -> str | None:
        """The gres type a job on `part` asks for (configured, else seen on its nodes)."""
        if part.accelerator is None or part.gres_type:
            return part.gres_type
        if part.name not in self._gres_seen:
            nodes = self._nodes()
            return gres_type(part, [n for n in nodes if part.name in node_partitions(n)], self._gres_seen)
        return self._gres_seen[part.name]
