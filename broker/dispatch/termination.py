"""Ending a cloud instance the broker no longer wants, and what a refusal to end it means."""

from __future__ import annotations

import asyncio
import logging

from adapters.base import Adapter, AdapterError
from broker.clock import Clock
from broker.dispatch.health import SiteHealth
from broker.model import Attempt
from broker.store import JobStore

log = logging.getLogger(__name__)


async def terminate(
    store: JobStore, health: SiteHealth, clock: Clock, adapter: Adapter, attempt: Attempt, backend_id: str,
    why: str = "",
) -> None:
    """Terminate `backend_id` (of `attempt`), saying so on the job either way; the site's health
    learns whether its instances can be ended (`SiteHealth.record_stop`)."""
    try:
        await asyncio.to_thread(adapter.cancel, backend_id, attempt.token)
    except AdapterError as exc:  # the reconciler will find it again: its attempt is not live
        log.warning("terminating %s at %s failed: %s", backend_id, attempt.site, exc)
        health.record_stop(attempt.site, exc)
        store.record(
            attempt.job_id,
            clock.now(),
            kind="terminate_failed",
            message=(
                f"instance {backend_id} at {attempt.site} could not be terminated ({type(exc).__name__} "
                f"{exc.code}: {exc.message[:200]}): the broker tries again at each reconcile pass"
            ),
            data={"attempt": attempt.id, "backend_id": backend_id, "code": exc.code},
        )
        return
    health.record_stop(attempt.site, None)
    store.record(
        attempt.job_id,
        clock.now(),
        kind="terminated",
        message=f"instance {backend_id} at {attempt.site} terminated{f' ({why})' if why else ''}",
        data={"attempt": attempt.id, "backend_id": backend_id},
    )
