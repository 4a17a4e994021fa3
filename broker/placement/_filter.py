"""The two filter shapes: over groups of offers (site x hardware) and over one group's offers."""

from __future__ import annotations

from collections.abc import Callable

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement.types import Reason

GroupRejections = list[tuple[Group, tuple[Reason, ...]]]
OfferRejections = list[tuple[Offer, tuple[Reason, ...]]]

GroupFilter = Callable[[list[Group], Env], tuple[list[Group], GroupRejections]]
"""Groups in, `(kept, rejections)` out; a rejection applies to every offer of the group."""

OfferFilter = Callable[[Group, list[Offer], Env], tuple[list[Offer], OfferRejections]]
"""One group's offers in, `(kept, rejections)` out."""

GroupKeep = Callable[[list[Group]], list[Group]]
"""A group filter's `kept` part for one decision, without reasons (`broker.placement.pipeline`)."""

Kept = list[tuple[Group, list[Offer]]]
"""Groups, each with its offers still in the running (never empty), in group order."""

OfferKeep = Callable[[Kept], Kept]
"""An offer filter's `kept` part for one decision, over every group at once, without reasons."""


def per_group(of: OfferFilter, env: Env) -> OfferKeep:
    """An offer filter as an `OfferKeep` (its reasons built and dropped)."""
    return lambda pairs: [(g, kept) for g, offers in pairs if (kept := of(g, offers, env)[0])]


def split_groups(
    groups: list[Group], env: Env, verdict: Callable[[Group, Env], tuple[Reason, ...]]
) -> tuple[list[Group], GroupRejections]:
    """Apply a per-group verdict (empty = keep)."""
    kept: list[Group] = []
    rejected: GroupRejections = []
    for g in groups:
        reasons = verdict(g, env)
        if reasons:
            rejected.append((g, reasons))
        else:
            kept.append(g)
    return kept, rejected
