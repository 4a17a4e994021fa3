"""The pure placement core: filter -> score -> rank, every rejection with its reason."""

from __future__ import annotations

from broker.placement.core import HARDWARE_PREFIX, place, rejection_counts, rejection_summary
from broker.placement.pipeline import GROUP_FILTERS, OFFER_FILTERS
from broker.placement.prepared import PreparedOffers, forget_snapshots, prepare_offers
from broker.placement.types import Explanation, PlacementContext, Reason, ScoredOffer
from broker.policy import SiteFacts

__all__ = [
    "GROUP_FILTERS",
    "HARDWARE_PREFIX",
    "OFFER_FILTERS",
    "Explanation",
    "PlacementContext",
    "PreparedOffers",
    "Reason",
    "ScoredOffer",
    "SiteFacts",
    "forget_snapshots",
    "place",
    "prepare_offers",
    "rejection_counts",
    "rejection_summary",
]
