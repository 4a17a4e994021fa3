"""Filter: a gang (`resources.nodes` > 1) runs all-or-nothing on one site.

On-prem, the partition needs that many nodes, under an adapter that starts them together
(Slurm; the local executor runs a job on its one host). At a cloud the gang is N instances in one
placement group (AWS cluster placement group, Alibaba deployment set) launched and rolled back
together (`broker.dispatch.gang`): the `aws` and `alibaba` adapters do that; other clouds'
offers are refused for gangs with that reason. Spot is off for gangs unless the policy's
`gangs.spot` allows it.
"""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement._filter import OfferKeep, OfferRejections, per_group
from broker.placement.types import Reason

GANG = "job.nodes"
GANG_ADAPTERS = frozenset({"aws", "alibaba"})
"""Cloud adapters that launch a gang's instances together in one placement group."""
GANG_ONPREM_ADAPTERS = frozenset({"slurm"})
"""On-prem adapters that start a gang's nodes together (Slurm: one job over N nodes). The local
executor runs a job as processes of this one host: a gang there would run as one node."""


def filter_gang(g: Group, offers: list[Offer], env: Env) -> tuple[list[Offer], OfferRejections]:
    """Keep offers that can host all of a gang's nodes at once (every offer for a one-node job)."""
    n = env.nodes
    if n <= 1:
        return offers, []
    site = g.site
    if site is None or (not site.partitions and site.adapter not in GANG_ADAPTERS):
        why = (
            f"a {n}-node gang needs {n} instances in one placement group; the "
            f"{site.adapter if site else 'unknown'} adapter cannot launch gangs"
        )
        return [], [(o, (Reason(GANG, why),)) for o in offers]
    if site.partitions and site.adapter not in GANG_ONPREM_ADAPTERS:
        why = (f"a {n}-node gang needs {n} nodes started together; the {site.adapter} adapter runs jobs "
               "on one host")
        return [], [(o, (Reason(GANG, why),)) for o in offers]
    nodes = {p.name: p.nodes for p in site.partitions} if site.partitions else None
    kept: list[Offer] = []
    rejected: OfferRejections = []
    spot_ok = env.policy.document.gangs.spot
    for o in offers:
        have = n if nodes is None else nodes.get(o.instance_type, 1)
        if have < n:
            rejected.append(
                (o, (Reason(GANG, f"partition {o.instance_type} has {have} node(s), the gang needs {n}"),))
            )
        elif o.spot and not spot_ok:
            rejected.append((o, (Reason(GANG, "gangs do not run on spot capacity (policy gangs.spot)"),)))
        else:
            kept.append(o)
    return kept, rejected


def keep_gang(env: Env) -> OfferKeep | None:
    """`filter_gang`'s kept offers (None: every offer, a one-node job)."""
    if env.nodes <= 1:
        return None
    return per_group(filter_gang, env)
