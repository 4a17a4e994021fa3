"""Launches a dead leader may have sent for attempts whose job ended before a backend id was stored.

Such a launch's call may have reached the cloud already, or may still land there: the new leader
looks the attempt's token up for as long as a call can take, before it calls the attempt never
started (and leaves an instance up, unbilled, until the periodic reconcile finds it).
"""

from __future__ import annotations

import asyncio
import logging

from adapters.base import Adapter, AdapterError
from broker.model import Attempt

log = logging.getLogger(__name__)

LATE_CALL_S = 40.0
"""How long a call sent by a leader that died can still land: the cloud adapters' connect (5 s)
plus read (30 s) timeouts, with slack. A call landing later is the periodic reconcile's."""
LOOK_EVERY_S = 1.0


def launched(adapter: Adapter, token: str) -> str | None:
    """The instance started under `token` at the adapter's site, if any (blocking)."""
    find = getattr(adapter, "find_by_token", None)  # (the clouds: one filtered describe call)
    if callable(find):
        found = find(token)
        return found if isinstance(found, str) else None
    for inst in adapter.list_owned():
        if inst.token == token and not (inst.state.terminal and not inst.stopped):
            return inst.backend_id
    return None


async def look_up(adapter: Adapter, attempt: Attempt, until: float) -> str | None:
    """Look the attempt's token up until loop time `until`; None: nothing started under it."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            found = await asyncio.to_thread(launched, adapter, attempt.token)
        except AdapterError as exc:  # the site may answer at the next look
            log.info("looking up %s at %s failed: %s", attempt.id, attempt.site, exc)
            found = None
        if found is not None or loop.time() >= until:
            return found
        await asyncio.sleep(LOOK_EVERY_S)
