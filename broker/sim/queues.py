"""The simulator's view of who waits where, for projected starts (`broker.burst.projection`).

Per on-prem partition: the jobs waiting for it (not those about to burst), keyed in dispatch
order (priority, then deadline). A job's projection takes the partition's running jobs'
expected ends and the jobs ahead of it: those keyed ahead, and every waiting job of a tenant
further below its fair share than the job's own (the dispatcher lets those tenants go first,
whatever their deadlines), so an over-share tenant's projection is not optimistic.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence

from broker.burst.projection import NEVER_S, expected_end, projected_wait_s, queue_key
from broker.fairshare import Demand, TenantState, share_ratios
from broker.model import SiteId
from broker.sim.backends import Partition
from broker.sim.expected import RunningEnds
from broker.sim.jobs import SimJob

Key = tuple[int, float, float, str]
Entry = tuple[Key, int, float, str]
"""A waiting job: dispatch key, units, remaining runtime, tenant."""
_Group = tuple[list[Entry], list[tuple[int, float]]]
MAX_GROUPS = 16
"""Sets of tenants whose part of a partition's line is kept (each costs a list per set per
job that comes or goes)."""


def dispatch_key(job: SimJob) -> Key:
    """Dispatch order within a tenant: priority, then deadline (arrival + max_wait)."""
    return queue_key(job.spec.priority.value, job.arrival_s + job.max_wait_s, job.arrival_s, job.id)


def arrivals(jobs: Sequence[SimJob], first: int) -> tuple[list[int], int]:
    """The jobs (by index) arriving at the same instant as `jobs[first]`, in dispatch order (as
    the live dispatcher's pass takes a batch submitted together), and the index after them."""
    end, t = first + 1, jobs[first].arrival_s
    while end < len(jobs) and jobs[end].arrival_s == t:
        end += 1
    return [j.index for j in sorted(jobs[first:end], key=dispatch_key)], end


class LaunchQueue:
    """Per cloud site, the deadlines of the jobs waiting to burst there at their last responsible moment."""

    def __init__(self) -> None:
        self.due: dict[str, list[tuple[float, int]]] = {}
        self.where: dict[int, tuple[str, float]] = {}

    def add(self, site: str, job: int, due_s: float) -> None:
        self.remove(job)
        bisect.insort(self.due.setdefault(site, []), (due_s, job))
        self.where[job] = (site, due_s)

    def remove(self, job: int) -> None:
        got = self.where.pop(job, None)
        if got is not None:
            queue = self.due[got[0]]
            del queue[bisect.bisect_left(queue, (got[1], job))]

    def ahead(self, due_s: float, job: int) -> dict[SiteId, int]:
        """Per site, the committed bursts due before job `job`, due at `due_s`: those due sooner,
        and those due at the same moment and listed before it (a batch submitted together is due
        together, and the route's launch rounds must stagger it too)."""
        out = {}
        for site, queue in self.due.items():
            n = bisect.bisect_left(queue, (due_s, job))
            if n:
                out[SiteId(site)] = n
        return out


class ProjectedQueues:
    def __init__(self, parts: Mapping[str, Partition], running: RunningEnds | None = None) -> None:
        self.parts = parts
        self.running = running or RunningEnds(parts)
        """Running jobs' expected ends (estimates x learned ratios, never actual runtimes)."""
        self.waiting: dict[str, dict[int, Entry]] = {k: {} for k in parts}
        self.where: dict[int, str] = {}
        self._sorted: dict[str, list[Entry] | None] = dict.fromkeys(parts)
        self._pairs: dict[str, list[tuple[int, float]]] = {}
        """Per partition, the (units, runtime) of each entry of its kept line, at the same positions
        (the jobs ahead of a key are a slice of it, not a tuple built per entry per projection)."""
        self._groups: dict[str, dict[frozenset[str], _Group]] = {k: {} for k in parts}
        """Per partition, the part of its line of each set of tenants let first that was read
        (`_behind`), kept in order likewise, with its (units, runtime) pairs at the same positions."""
        self._per_tenant: Counter[str] = Counter()
        """Waiting jobs per tenant, kept by add/remove: fair-share ratios are read per decision."""

    def tenants(self) -> set[str]:
        """Tenants with a job waiting in some partition."""
        return {t for t, n in self._per_tenant.items() if n > 0}

    def add(self, part: str, job: int, key: Key, units: int, runtime_s: float, tenant: str) -> None:
        self.remove(job)
        entry = self.waiting[part][job] = (key, units, runtime_s, tenant)
        self.where[job] = part
        line = self._sorted[part]
        if line is not None:  # kept in order as jobs come and go (keys are unique: they end in the job id)
            i = bisect.bisect_right(line, entry)
            line.insert(i, entry)
            self._pairs[part].insert(i, (units, runtime_s))
        for who, (entries, pairs) in self._groups[part].items():
            if tenant in who:
                i = bisect.bisect_right(entries, entry)
                entries.insert(i, entry)
                pairs.insert(i, (units, runtime_s))
        self._per_tenant[tenant] += 1

    def remove(self, job: int) -> None:
        part = self.where.pop(job, None)
        if part is not None:
            entry = self.waiting[part].pop(job)
            self._per_tenant[entry[3]] -= 1
            line = self._sorted[part]
            if line is not None:
                i = bisect.bisect_left(line, entry)
                del line[i], self._pairs[part][i]
            for who, (entries, pairs) in self._groups[part].items():
                if entry[3] in who:
                    i = bisect.bisect_left(entries, entry)
                    del entries[i], pairs[i]

    def _ordered(self, part: str) -> list[Entry]:
        got = self._sorted[part]
        if got is None:
            got = self._sorted[part] = sorted(self.waiting[part].values())
            self._pairs[part] = [(u, r) for _, u, r, _ in got]
        return got

    def project_job(self, job: SimJob, now_s: float, ratios: Mapping[str, float]) -> Waits:
        """The job's projected wait on each partition of its kind (running ends + the queue ahead),
        each computed when first read; `ratios`: each tenant's share used over share entitled."""
        remaining = max(0.0, job.arrival_s + job.max_wait_s - now_s)
        give_up = max(2 * remaining, remaining + 3600.0)
        accelerated = job.spec.accelerator_count > 0
        mine = ratios.get(job.tenant, 0.0)
        first = frozenset(t for t, r in ratios.items() if r < mine and t != job.tenant)
        key = dispatch_key(job)
        names = [name for name, part in self.parts.items() if part.accelerated == accelerated]
        return Waits(names, lambda name: self._wait(name, key, job.demand, now_s, give_up, first))

    def project(
        self,
        key: Key,
        units: int,
        now_s: float,
        give_up_after_s: float,
        *,
        accelerated: bool,
        first: frozenset[str] = frozenset(),
    ) -> dict[str, float]:
        """Projected wait of a job with this dispatch key on every partition of its kind; the
        waiting jobs of the tenants in `first` count as ahead of it wherever they are keyed."""
        return {
            name: self._wait(name, key, units, now_s, give_up_after_s, first)
            for name, part in self.parts.items()
            if part.accelerated == accelerated
        }

    def _wait(
        self, name: str, key: Key, units: int, now_s: float, give_up_after_s: float, first: frozenset[str]
    ) -> float:
        """`project`'s wait on one partition."""
        part = self.parts[name]
        if units > part.total:
            return NEVER_S
        queue = self._ordered(name)
        n = bisect.bisect_left(queue, (key,))
        ahead = self._pairs[name][:n]
        if first:
            ahead += self._behind(name, key, first)
        ends = overrun_ends(self.running.ends(name), now_s)
        held = self.running.units(name)
        # Busy units no known running job holds (none expected) count as freeing now.
        missing = part.total - part.free - held
        if missing > 0:
            ends = [*ends, (now_s, missing)]
            ends.sort()
            held += missing
        total = part.free + held
        wait = projected_wait_s(
            part.free,
            ends,
            ahead,
            units,
            now_s,
            give_up_after_s=give_up_after_s,
            total=total,
            ends_sorted=True,
        )
        return min(wait, NEVER_S)

    def _behind(self, part: str, key: Key, first: frozenset[str]) -> list[tuple[int, float]]:
        """(units, runtime) of the jobs of `first`'s tenants keyed after `key`, in line order: a slice
        of the part of the line those tenants hold, kept per set of tenants (a few sets recur: the
        tenants below a job's own fair-share ratio), not the whole line's tail filtered."""
        groups = self._groups[part]
        got = groups.get(first)
        if got is None:
            if len(groups) >= MAX_GROUPS:  # many tenants: the sets of the ones read last are kept
                groups.clear()
            entries = [e for e in self._ordered(part) if e[3] in first]
            got = groups[first] = (entries, [(u, r) for _, u, r, _ in entries])
        return got[1][bisect.bisect_left(got[0], (key,)) :]


def overrun_ends(ends: list[tuple[float, int]], now_s: float) -> list[tuple[float, int]]:
    """Sorted `ends` with each run already past its expected end moved to `expected_end`, as live."""
    over = bisect.bisect_right(ends, (now_s, math.inf))
    if not over:
        return ends
    moved = [(expected_end(end, now_s), units) for end, units in ends[:over]]
    return sorted(moved + ends[over:])


class Waits(Mapping[str, float]):
    """One job's projected waits, per partition of its kind, each computed on first read (a
    decision reads only the partitions its allowed offers are in), within the decision that
    asked: the queues do not change meanwhile."""

    __slots__ = ("_compute", "_got", "_names")

    def __init__(self, names: list[str], compute: Callable[[str], float]) -> None:
        self._names, self._compute = names, compute
        self._got: dict[str, float] = {}

    def __getitem__(self, name: str) -> float:
        got = self._got.get(name)
        if got is None:
            if name not in self._names:
                raise KeyError(name)
            got = self._got[name] = self._compute(name)
        return got

    def get(self, name: str, default: float | None = None) -> float | None:  # type: ignore[override]
        """`Mapping.get` without its try/except around `__getitem__` (a decision reads it per offer)."""
        got = self._got.get(name)
        if got is None:
            if name not in self._names:
                return default
            got = self._got[name] = self._compute(name)
        return got

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class FairRatios:
    """Each tenant's fair-share ratio (dominant share used over share entitled), once per instant
    and set of tenants: those holding capacity, those waiting, and the job being decided."""

    def __init__(self, queues: ProjectedQueues, capacity: Demand) -> None:
        self.queues, self.capacity = queues, capacity
        self._memo: tuple[float, frozenset[str], dict[str, float]] = (-1.0, frozenset(), {})

    def at(
        self, now_s: float, tenant: str, states: Callable[[set[str]], Mapping[str, TenantState]]
    ) -> dict[str, float]:
        if self._memo[0] == now_s and tenant in self._memo[1]:
            return self._memo[2]
        waiting = self.queues.tenants() | {tenant}
        got = states(waiting)
        active = waiting | {t for t, s in got.items() if any(s.usage.shares(self.capacity))}
        self._memo = (now_s, frozenset(active), share_ratios(got, active, self.capacity))
        return self._memo[2]
