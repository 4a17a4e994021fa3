"""Reconciliation: what each site says this broker owns vs what the store says is live.

At start and periodically: an instance carrying this broker's marks whose attempt is live but
has no backend id yet is adopted (the broker died between the cloud call and storing the id);
one whose attempt is over, or unknown, is an orphan and is terminated. Every action is
recorded on the job it belongs to.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from adapters.base import AdapterError
from broker.model import AttemptState, JobId

if TYPE_CHECKING:
    from broker.dispatch.dispatcher import Dispatcher

log = logging.getLogger(__name__)


async def reconcile(dispatcher: Dispatcher) -> dict[str, int]:
    """One reconciliation pass over every site; returns counts of what it did."""
    store = dispatcher.store
    counts = {"adopted": 0, "terminated": 0, "unreachable": 0}
    for site, adapter in list(dispatcher.adapters.items()):
        try:
            owned = await asyncio.to_thread(adapter.list_owned)
        except AdapterError as exc:
            counts["unreachable"] += 1
            log.info("reconcile: %s unreachable: %s", site, exc)
            continue
        # Read live attempts after listing, so an attempt started meanwhile is never an orphan.
        by_token = {a.token: a for a in store.live_attempts()}
        for inst in owned:
            if inst.state.terminal:
                continue
            attempt = by_token.get(inst.token or "")
            now = dispatcher.clock.now()
            if attempt is not None and attempt.site == site:
                if attempt.backend_id is None:
                    store.update_attempt(attempt.id, now, backend_id=inst.backend_id)
                    store.record(
                        attempt.job_id,
                        now,
                        kind="adopted",
                        message=f"adopted {inst.backend_id} at {site} (started before a crash)",
                        data={"attempt": attempt.id, "backend_id": inst.backend_id},
                    )
                    counts["adopted"] += 1
                continue
            try:
                await asyncio.to_thread(adapter.cancel, inst.backend_id, inst.token or "")
            except AdapterError as exc:
                log.warning("reconcile: terminating orphan %s at %s failed: %s", inst.backend_id, site, exc)
                continue
            counts["terminated"] += 1
            log.warning("reconcile: terminated orphan %s at %s", inst.backend_id, site)
            if inst.job_id:
                try:
                    store.record(
                        JobId(inst.job_id),
                        now,
                        kind="orphan_terminated",
                        message=f"terminated orphan {inst.backend_id} at {site}",
                        data={"backend_id": inst.backend_id, "attempt": inst.attempt_id},
                    )
                    if inst.attempt_id:
                        store.update_attempt(inst.attempt_id, now, state=AttemptState.CANCELLED)
                except Exception:  # the job may not exist in this store (another broker's)
                    log.info("reconcile: orphan %s names unknown job %s", inst.backend_id, inst.job_id)
    return counts
