"""The simulator's fair-share book: the same numbers as `FairShareBook`, in O(tenants) per read.

The live book sums every running holding on each read, which is fine for a broker's queue but
was 40% of a simulated 8k-job run. Here each tenant keeps running sums instead: what it holds
(accelerators, cores, memory) and the same weighted by 2^((start - origin)/H), from which the
decayed integral of its running work is `held - 2^(-(now - origin)/H) · weighted`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from broker.fairshare.book import FairShareBook, Holding, capacity_of
from broker.fairshare.holds import Holds
from broker.fairshare.order import TenantState, dominant, share_ratios
from broker.fairshare.shares import Share, resolve_share
from broker.fairshare.usage import ZERO, Demand
from broker.policy import Policy

_REBASE = 16.0
"""Half-lives after which the origin moves up (keeps the weights near 1 and the sums exact)."""


def _vec(d: Demand, k: float = 1.0) -> tuple[float, float, float]:
    return d.accelerators * k, d.cpus * k, d.memory_gb * k


class IncrementalBook(FairShareBook):
    """`FairShareBook` with per-tenant running sums of what is held now."""

    def __init__(self, half_life_s: float) -> None:
        super().__init__(half_life_s)
        self._held: dict[str, list[float]] = {}
        self._weighted: dict[str, list[float]] = {}
        self._in_use: dict[str, dict[str, int]] = {}
        self._origin = 0.0
        self._version = 0
        """Bumped by every start and end: the read memo below holds for one (time, version)."""
        self._memo: tuple[tuple[float, int, int], dict[str, TenantState]] | None = None
        self._shares: tuple[Policy | None, dict[str, Share]] = (None, {})
        self._in_use_memo: tuple[int, dict[str, dict[str, int]]] = (-1, {})
        self._held_memo: tuple[object, dict[str, float]] = (None, {})
        self._capacity: tuple[Policy | None, Demand] = (None, ZERO)

    def _weight(self, start: float) -> float:
        h = self.ledger.half_life_s
        return 2 ** ((start - self._origin) / h) if h > 0 else 0.0

    def _rebase(self, t: float) -> None:
        h = self.ledger.half_life_s
        if h <= 0 or (t - self._origin) / h < _REBASE:
            return
        f = 2 ** (-(t - self._origin) / h)
        for w in self._weighted.values():
            w[0], w[1], w[2] = w[0] * f, w[1] * f, w[2] * f
        self._origin = t

    def _book(self, h: Holding, sign: int) -> None:
        self._rebase(h.start.timestamp())
        held = self._held.setdefault(h.tenant, [0.0, 0.0, 0.0])
        weighted = self._weighted.setdefault(h.tenant, [0.0, 0.0, 0.0])
        w = sign * self._weight(h.start.timestamp())
        for i, v in enumerate(_vec(h.demand)):
            held[i] += sign * v
            weighted[i] += w * v
        per = self._in_use.setdefault(h.tenant, {})
        per[h.partition] = per.get(h.partition, 0) + sign * h.units
        if not per[h.partition]:
            del per[h.partition]

    def started(self, attempt_id: str, holding: Holding) -> None:
        self._version += 1
        if attempt_id not in self.live:
            self._book(holding, +1)
        super().started(attempt_id, holding)

    def ended(self, attempt_id: str, end: datetime) -> None:
        self._version += 1
        held = self.live.get(attempt_id)
        if held is not None:
            self._book(held, -1)
        super().ended(attempt_id, end)

    def tenant_states(
        self, policy: Policy, now: datetime, tenants: Iterable[str] = ()
    ) -> dict[str, TenantState]:
        """Every tenant that holds, held or asks for on-prem capacity, with its share and usage.

        Read many times per dispatch pass with nothing started or ended in between: the states
        are kept for one (time, book version), and only the asked-for tenants added per read."""
        key = (now.timestamp(), self._version, id(policy))
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, self._states(policy, now))
        known = self._memo[1]
        out = dict(known)
        for x in tenants:
            if x not in out:
                out[x] = TenantState(share=self._share(policy, x), usage=ZERO, in_use={})
        return out

    def held_for(
        self, holds: Holds, policy: Policy, now: datetime, job_id: str, tenant: str
    ) -> dict[str, int]:
        """`FairShareBook.held_for`, its share ratios kept for one (time, book version, tenants asked)
        and the capacity once per policy: a pass asks it for each job it decides."""
        if not holds:
            return {}
        asked = frozenset({tenant, *holds.holders()})
        key = (now.timestamp(), self._version, id(policy), asked)
        if self._held_memo[0] != key:
            if self._capacity[0] is not policy:
                self._capacity = (policy, capacity_of(policy))
            capacity = self._capacity[1]
            states = self.tenant_states(policy, now, asked)
            active = {t for t, st in states.items() if dominant(st.usage, capacity) > 0}
            self._held_memo = (key, share_ratios(states, active | asked, capacity))
        return holds.blocking(job_id, tenant, self._held_memo[1])

    def _share(self, policy: Policy, tenant: str) -> Share:
        if self._shares[0] is not policy:
            self._shares = (policy, {})
        got = self._shares[1].get(tenant)
        if got is None:
            got = self._shares[1][tenant] = resolve_share(policy, tenant)
        return got

    def _states(self, policy: Policy, now: datetime) -> dict[str, TenantState]:
        t = now.timestamp()
        self._rebase(t)
        h = self.ledger.half_life_s
        past = self.ledger.history(now)  # advances the ledger to `now`: called as before, same floats
        decay = 2 ** (-(t - self._origin) / h) if h > 0 else 0.0
        used: dict[str, Demand] = {}
        none = [0.0, 0.0, 0.0]
        for tenant in {*past, *(k for k, v in self._held.items() if any(v))}:
            a = self._held.get(tenant, none)
            if h <= 0:
                used[tenant] = Demand(*a)
                continue
            w = self._weighted.get(tenant, none)
            p = past.get(tenant, ZERO)
            # (held + decayed history + running work so far) / 2, term by term as `usage` adds them.
            used[tenant] = Demand(
                (a[0] + p.accelerators + max(0.0, a[0] - decay * w[0])) * 0.5,
                (a[1] + p.cpus + max(0.0, a[1] - decay * w[1])) * 0.5,
                (a[2] + p.memory_gb + max(0.0, a[2] - decay * w[2])) * 0.5,
            )
        names = {*used, *(x.id for x in policy.tenants)}
        in_use = self._in_use_copies()
        return {
            x: TenantState(share=self._share(policy, x), usage=used.get(x, ZERO), in_use=in_use.get(x, {}))
            for x in names
        }

    def _in_use_copies(self) -> dict[str, dict[str, int]]:
        """Each tenant's units per partition, copied once per book version (reads keep their copy)."""
        if self._in_use_memo[0] != self._version:
            self._in_use_memo = (self._version, {t: dict(per) for t, per in self._in_use.items()})
        return self._in_use_memo[1]


def close(a: Demand, b: Demand, tol: float = 1e-6) -> bool:
    """Equal up to float noise (relative), for the test that checks this book against the live one."""
    return all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(_vec(a), _vec(b), strict=True))
