"""What one quota refusal covers, as a blocklist target placement can read back.

A cloud counts quotas narrower than a region: EC2 per instance family (its "P" and "G and VT"
vCPU limits, on-demand and spot apart), and a gang refused at its Nth node shows only that the
account lacks room for N nodes. Such a block is the target
``site/region/quota:<market>:<types>:<nodes>``: `market` is `ondemand`, `spot` or `any`;
`types` the instance types and families (an EC2 type's leading letters) it counts, `*` for all;
`nodes` the least nodes a job needs to meet it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from broker.model import Offer

_MARK = "/quota:"
_FAMILY = re.compile(r"^(?:ecs\.)?([a-z]+)")


def family_of(instance_type: str) -> str:
    """An instance type's family letters (`p` of p4d.24xlarge, `inf` of inf2.xlarge, `gn` of ecs.gn7i-…)."""
    found = _FAMILY.match(instance_type.lower())
    return found.group(1) if found else instance_type


@dataclass(frozen=True)
class QuotaScope:
    """One quota block: offers of `site`/`region` in `market` whose type or family is in `types`."""

    site: str
    region: str
    market: str = "any"
    types: tuple[str, ...] = ()
    """Instance types and families the quota counts; empty: every type in the region."""
    nodes: int = 1

    @property
    def target(self) -> str:
        return f"{self.site}/{self.region}{_MARK}{self.market}:{','.join(self.types) or '*'}:{self.nodes}"

    def covers(self, offer: Offer, nodes: int) -> bool:
        """Does this quota refuse a job of `nodes` nodes on `offer`?"""
        if offer.site != self.site or offer.region != self.region or nodes < self.nodes:
            return False
        if self.market != "any" and self.market != ("spot" if offer.spot else "ondemand"):
            return False
        kind = offer.instance_type
        return not self.types or kind in self.types or family_of(kind) in self.types


@lru_cache(maxsize=4096)
def parse(key: str) -> QuotaScope | None:
    """The scope a blocklist target names (None: it is no quota scope). Memoized: the target is
    the one source of a quota block's scope, read back by the blocklist and by every placement
    context that carries it (a region has a few quotas; 4096 targets are far more than are live)."""
    head, mark, tail = key.partition(_MARK)
    site, _, region = head.partition("/")
    parts = tail.split(":")
    if not mark or len(parts) != 3 or not parts[2].isdigit():
        return None
    types = () if parts[1] == "*" else tuple(parts[1].split(","))
    return QuotaScope(site, region, parts[0], types, int(parts[2]))


def scopes(blocked: frozenset[str]) -> list[QuotaScope]:
    """The quota scopes among the blocklist's targets."""
    return [s for s in (parse(k) for k in blocked if _MARK in k) if s is not None]
