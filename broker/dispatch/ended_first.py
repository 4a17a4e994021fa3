"""Before a cancel or a reclaim stops an attempt, read whether it has ended on its own.

A job that finished since the last poll (its exit code written, its result not yet read) would
otherwise be recorded CANCELLED, or PREEMPTED and run again, from the store's view: a finished
job's result rewritten, its work repeated. One status read narrows that window from the poll
interval to the read itself; the local adapter closes the rest (a cancel after the exit code
does not mark it cancelled). An agent-run (cloud) attempt's backend cannot say how its job
ended, only that the instance runs: its bootstrap's kept result (the console) is read instead,
for a job that ended while its report could not reach the broker (the broker down, say).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from adapters.base import Adapter, AdapterError, KeptResult, status_for
from broker.dispatch.gang import is_gang_attempt
from broker.model import Attempt, AttemptState, AttemptStatus, SiteId

_ENDED = (AttemptState.SUCCEEDED, AttemptState.FAILED)


async def ended_first(
    attempts: Iterable[Attempt],
    adapters: Mapping[SiteId, Adapter],
    needs_agent: Callable[[str], bool],
) -> list[tuple[Attempt, AttemptStatus]]:
    """The live attempts among `attempts` that ended on their own, with that status, for the caller
    to record as a poll would: on-prem ones as their backend says, agent-run ones as their bootstrap
    kept it. Gangs and backends that do not answer are left to the polls."""
    out: list[tuple[Attempt, AttemptStatus]] = []
    for attempt in attempts:
        adapter = adapters.get(attempt.site)
        if attempt.state.terminal or attempt.backend_id is None or adapter is None:
            continue
        if is_gang_attempt(attempt):
            continue
        try:
            if not needs_agent(attempt.site):
                status: AttemptStatus | None = await asyncio.to_thread(
                    status_for, adapter, attempt.backend_id, attempt.token
                )
            elif isinstance(adapter, KeptResult):
                status = await asyncio.to_thread(adapter.kept_result, attempt.backend_id)
            else:
                continue
        except AdapterError:  # (NotFoundError too: what a vanished attempt means is the poll's to say)
            continue
        if status is not None and status.state in _ENDED:
            out.append((attempt, status))
    return out
