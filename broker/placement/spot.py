"""Filter: spot mode (never: on-demand only; required: spot only; allowed: both)."""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement._filter import OfferKeep, OfferRejections
from broker.placement.types import Reason

SPOT = "job.spot"


def filter_spot(g: Group, offers: list[Offer], env: Env) -> tuple[list[Offer], OfferRejections]:
    """Keep offers whose market matches the job's spot mode."""
    if env.spot_never:
        want, why = False, "the job never runs on spot capacity"
    elif env.spot_required:
        want, why = True, "the job runs only on spot capacity"
    else:
        return offers, []
    kept = [o for o in offers if o.spot is want]
    if len(kept) == len(offers):
        return offers, []
    return kept, [(o, (Reason(SPOT, why),)) for o in offers if o.spot is not want]


def keep_spot(env: Env) -> OfferKeep | None:
    """`filter_spot`'s kept offers (None: every offer, the job takes either market)."""
    if env.spot_never:
        want = False
    elif env.spot_required:
        want = True
    else:
        return None
    return lambda pairs: [(g, kept) for g, offers in pairs if (kept := [o for o in offers if o.spot is want])]
