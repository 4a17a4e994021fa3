"""An agent-run attempt gone silent past the heartbeat timeout: lost, unless its job's result is kept.

The instance may be fine and its job finished, only its path to the agent endpoint broken (a
firewall, a proxy, a NAT in between): the bootstrap printed the result to the console before
trying to report it, so the broker reads it there before it terminates the instance and runs
the job again. A gang's nodes each print their rank's result to their own console: each rank
that has not reported its exit is read there and kept as a rank exit, as its report would be.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from adapters._gang import parse_gang_id
from adapters.base import Adapter, AdapterError, KeptResult, TransientError
from broker.dispatch.gang import fold, rank_exit, reported_ranks
from broker.model import JOB_SIDE, Attempt, AttemptState, AttemptStatus
from broker.store import JobStore

_FROM_CONSOLE = "read from its instance's console output"


async def silent_attempt(
    adapter: Adapter,
    attempt: Attempt,
    silent_s: float,
    timeout_s: float,
    *,
    store: JobStore,
    now: datetime,
    heard: bool = False,
) -> AttemptStatus:
    """The result the attempt's bootstrap kept when there is one, else LOST (no heartbeat):
    lost on the job (`JOB_SIDE`) when its agent was `heard` and fell silent while the instance runs.

    Raises TransientError when the kept result cannot be read yet: the next poll asks again, up
    to twice the heartbeat timeout `timeout_s` of silence; then the attempt is lost (a console
    throttled for hours must not keep a silent instance running and billed)."""
    silence = f"no heartbeat from the instance for {silent_s:.0f}s"
    if heard:
        # Its agent ran, then stopped while the backend says the instance still runs: the job
        # killed it (or cut its path to us), which says nothing of the offer or the route.
        silence = f"{JOB_SIDE}{silence}, its agent heard before and its instance still running"
    lost = AttemptStatus(state=AttemptState.LOST, message=silence)
    if attempt.backend_id is None or not isinstance(adapter, KeptResult):
        return lost
    try:
        if parse_gang_id(attempt.backend_id) is not None:
            kept = await asyncio.to_thread(kept_gang_result, adapter, attempt, store, now)
        else:
            kept = await asyncio.to_thread(adapter.kept_result, attempt.backend_id)
    except TransientError:
        if silent_s > 2 * timeout_s:
            return lost
        raise
    except AdapterError:  # the instance or its console is gone: nothing was kept for us
        return lost
    return lost if kept is None else kept


def kept_gang_result(
    adapter: KeptResult, attempt: Attempt, store: JobStore, now: datetime
) -> AttemptStatus | None:
    """The gang's result from its ranks' exits, reported or read from their consoles (blocking).

    None while a rank's result is nowhere and no rank failed: the gang is lost. A rank's failure
    fails the gang at once, as its report would have. Raises TransientError when a console
    could not be read yet and the others do not settle the gang."""
    gang = parse_gang_id(attempt.backend_id or "")
    assert gang is not None
    ranks = reported_ranks(store, attempt)
    unreadable: TransientError | None = None
    for rank, node in enumerate(gang.nodes):
        if rank in ranks:
            continue  # its report (or an earlier pass's read) stands: its console is not read again
        try:
            kept = adapter.kept_result(node)
        except TransientError as exc:
            unreadable = exc
            continue
        except AdapterError:  # the node or its console is gone: nothing was kept for us
            continue
        if kept is None:
            continue
        code = 1 if kept.exit_code is None else kept.exit_code
        # Kept as a rank exit: the job's events show it, and a later pass does not read it again.
        rank_exit(store, attempt, rank, code, kept.log_tail, now, source=_FROM_CONSOLE)
        ranks[rank] = kept
    status = fold(len(gang.nodes), ranks)
    if status.state.terminal:
        return status
    if unreadable is not None:
        raise unreadable
    return None
