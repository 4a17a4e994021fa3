"""An agent-run attempt gone silent past the heartbeat timeout: lost, unless its job's result is kept.

The instance may be fine and its job finished, only its path to the agent endpoint broken (a
firewall, a proxy, a NAT in between): the bootstrap printed the result to the console before
trying to report it, so the broker reads it there before it terminates the instance and runs
the job again.
"""

from __future__ import annotations

import asyncio

from adapters.base import Adapter, AdapterError, KeptResult, TransientError
from broker.dispatch.gang import is_gang_attempt
from broker.model import Attempt, AttemptState, AttemptStatus


async def silent_attempt(
    adapter: Adapter, attempt: Attempt, silent_s: float, timeout_s: float
) -> AttemptStatus:
    """The result the attempt's bootstrap kept when there is one, else LOST (no heartbeat).

    Raises TransientError when the kept result cannot be read yet: the next poll asks again, up
    to twice the heartbeat timeout `timeout_s` of silence; then the attempt is lost (a console
    throttled for hours must not keep a silent instance running and billed)."""
    silence = f"no heartbeat from the instance for {silent_s:.0f}s"
    lost = AttemptStatus(state=AttemptState.LOST, message=silence)
    # A gang's nodes each keep a rank's result; its status comes from all of them (not here).
    if attempt.backend_id is None or is_gang_attempt(attempt) or not isinstance(adapter, KeptResult):
        return lost
    try:
        kept = await asyncio.to_thread(adapter.kept_result, attempt.backend_id)
    except TransientError:
        if silent_s > 2 * timeout_s:
            return lost
        raise
    except AdapterError:  # the instance or its console is gone: nothing was kept for us
        return lost
    return lost if kept is None else kept
