"""The marks every cloud adapter puts on what it starts, and how to read them back."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from broker.model import AttemptId, AttemptState, JobId, LaunchRequest, OwnedInstance, SiteId

TAG_BROKER = "szb:broker"
"""Which broker owns the instance (config `broker_id`); list_owned filters on it."""
TAG_JOB = "szb:job"
TAG_ATTEMPT = "szb:attempt"
TAG_TOKEN = "szb:token"
"""The attempt's idempotency token; submit looks for it before creating anything."""
TAG_CANCELLED = "szb:cancelled"
"""Set (to the cancel token) just before the broker terminates an instance."""

DEFAULT_BROKER_ID = "shangzhuang"


def owner_prefix(broker_id: str, *, shown: int = 24) -> str:
    """`szb-<broker id, cut to shown>-<6 hex of its hash>-`: how a name made by this broker starts.

    The hash keeps two brokers' names apart where a bare `szb-<id>-` would not: an id that
    extends another (`prod`, `prod-eu`: `szb-prod-eu-…` starts with `szb-prod-`) or two ids cut
    to the same length to fit a name."""
    digest = hashlib.sha256(broker_id.encode()).hexdigest()[:6]
    return f"szb-{broker_id[:shown]}-{digest}-"


def ownership_tags(broker_id: str, request: LaunchRequest) -> dict[str, str]:
    """Tags naming the broker, job, attempt and token of one launch."""
    return {
        TAG_BROKER: broker_id,
        TAG_JOB: str(request.job_id),
        TAG_ATTEMPT: str(request.attempt_id),
        TAG_TOKEN: request.token,
    }


def owned_from_tags(
    site: SiteId, backend_id: str, tags: Mapping[str, str], state: AttemptState, *, stopped: bool = False
) -> OwnedInstance:
    """Build an OwnedInstance from an instance's tags (`stopped`: it exists but does not run)."""
    job = tags.get(TAG_JOB)
    attempt = tags.get(TAG_ATTEMPT)
    return OwnedInstance(
        site=site,
        backend_id=backend_id,
        token=tags.get(TAG_TOKEN),
        job_id=JobId(job) if job else None,
        attempt_id=AttemptId(attempt) if attempt else None,
        state=state,
        stopped=stopped,
    )
