"""Gang jobs at clouds: N nodes launched together, watched per rank, ended together.

A gang is one attempt (one token, one agent secret), as on Slurm; at a cloud it is N
instances in one placement group whose backend id lists them in rank order
(`adapters._gang.GangId`). Launching creates the group, then starts rank 0 (the master) and
the other ranks with its address; each node's launch is idempotent per (token, rank), so a
resumed launch after a crash adopts what already runs. If any node cannot start, every node
the token started is terminated and the group deleted before the error goes up: the
dispatcher then fails the attempt over as a whole. Before each node the launch asks whether its
attempt is still wanted (the job cancelled, the attempt timed out): if not, it rolls back the
same way and stops with `LaunchStopped`, so a cancel does not start (and bill) the other nodes.

Each node reports on its own (the agent's reports carry its rank; they are kept as job
events, so they survive a restart); a rank whose report cannot reach the broker is read from
its node's console once the gang is silent (`broker.dispatch.silence`). The attempt succeeds
when rank 0 succeeded and every rank ended, and fails as soon as any rank fails; terminating the
attempt ends every node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from adapters._gang import GangId, parse_gang_id
from adapters.base import Adapter, AdapterError, GangLauncher, NotFoundError, QuotaError
from broker.dispatch.failover import GANG_NODE_ENDED
from broker.dispatch.retry import RetryPolicy, retry_transient
from broker.errors import BrokerError
from broker.model import Attempt, AttemptState, AttemptStatus, LaunchRequest
from broker.store import JobStore

log = logging.getLogger(__name__)

RANK_EXIT = "rank_exit"
"""Kind of the job event that keeps one rank's exit (data: attempt, rank, exit_code)."""
_ROLLBACK_TRIES = 3


class LaunchStopped(BrokerError):
    """A launch stopped because its attempt is no longer wanted; what it had started is rolled
    back (a gang's nodes, a single node's instance)."""


class CloudGang(Adapter, GangLauncher, Protocol):
    """An adapter that can launch gangs."""


def gang_launcher(adapter: Adapter) -> CloudGang | None:
    """The adapter when it launches gangs itself (clouds), else None (Slurm runs one job)."""
    return adapter if isinstance(adapter, GangLauncher) else None


def adoptable(store: JobStore, adapter: Adapter, attempt: Attempt) -> bool:
    """Whether the reconciler may adopt one listed instance as the attempt's backend id: never
    for a cloud gang, whose resumed launch adopts its nodes rank by rank."""
    return gang_launcher(adapter) is None or store.get(attempt.job_id).spec.resources.nodes <= 1


def is_gang_attempt(attempt: Attempt) -> bool:
    return attempt.backend_id is not None and parse_gang_id(attempt.backend_id) is not None


def launch_gang(
    adapter: CloudGang,
    request: LaunchRequest,
    retry: RetryPolicy,
    *,
    fresh: bool,
    unwanted: Callable[[], str | None] = lambda: None,
) -> str:
    """Start every node of a gang (blocking; run it in a thread); returns the gang's backend id.

    `fresh`: the attempt was never launched before, so nothing can exist under its token.
    `unwanted`: asked before each node; a reason (the job was cancelled, say) stops the launch.
    """
    nodes = request.spec.resources.nodes
    group = retry_transient(lambda: adapter.create_group(request), policy=retry)
    ids: list[str] = []
    try:
        master = ""
        for rank in range(nodes):
            why = unwanted()
            if why:
                raise LaunchStopped(f"gang launch stopped before rank {rank} of {nodes}: {why}")
            node = request.model_copy(update={"node_rank": rank, "group": group, "master_addr": master})
            ids.append(_launch_node(adapter, node, retry, fresh=fresh))
            if not fresh:
                _still_there(adapter, request, rank, ids[-1])
            if rank == 0:
                master = retry_transient(lambda: adapter.node_address(ids[0]), policy=retry)
    except AdapterError as exc:
        if isinstance(exc, QuotaError) and ids:
            # The quota had room for the nodes before this one: it refuses gangs this big, not
            # every job there (a one-node job still fits).
            exc.nodes = max(exc.nodes, len(ids) + 1)
        log.warning(
            "gang of %d at %s: node %d failed (%s); rolling back",
            nodes,
            request.offer.site,
            len(ids),
            exc,
        )
        rollback(adapter, request, group, ids)
        raise
    except LaunchStopped as stop:
        log.info("%s at %s; rolling back", stop, request.offer.site)
        rollback(adapter, request, group, ids)
        raise
    return str(GangId(group, tuple(ids)))


def _still_there(adapter: CloudGang, request: LaunchRequest, rank: int, node: str) -> None:
    """A resumed launch adopts each node its token started: one that already ended (a rollback
    the broker was killed in, say, had tagged or terminated it) cannot join the gang again."""
    status = adapter.status(node)
    if status.state.terminal:
        raise AdapterError(
            request.offer.site,
            GANG_NODE_ENDED,
            f"rank {rank}'s instance {node} already ended ({status.message}): the gang's launch "
            "cannot be resumed",
        )


def _launch_node(adapter: CloudGang, node: LaunchRequest, retry: RetryPolicy, *, fresh: bool) -> str:
    calls = 0

    def submit() -> str:
        nonlocal calls
        calls += 1
        return adapter.submit(node.model_copy(update={"first_call": fresh and calls == 1}))

    return retry_transient(submit, policy=retry)


def rollback(adapter: CloudGang, request: LaunchRequest, group: str, started: Sequence[str]) -> None:
    """Terminate every node the token started (answered or not) and delete the group."""
    for _ in range(_ROLLBACK_TRIES):
        try:
            found = [adapter.find_node(request.token, r) for r in range(request.spec.resources.nodes)]
            nodes = tuple(dict.fromkeys([*started, *(f for f in found if f)]))
            adapter.cancel(str(GangId(group, nodes)), request.token)
            return
        except AdapterError as exc:
            log.warning("rolling back the gang of %s at %s: %s", request.attempt_id, request.offer.site, exc)
    # What is left carries the attempt's token: the reconciler ends it once the attempt is over.


def fold(nodes: int, ranks: Mapping[int, AttemptStatus]) -> AttemptStatus:
    """One status for the gang from its ranks' (missing ranks: not started or not heard)."""
    for bad in (AttemptState.FAILED, AttemptState.PREEMPTED, AttemptState.LOST, AttemptState.CANCELLED):
        hit = sorted(r for r, s in ranks.items() if s.state == bad)
        if hit:
            s = ranks[hit[0]]
            # A gang restarts whole: its nodes all go now, a rank under a reclaim notice too
            # (the others would sit idle and billed, and one rank alone saves no checkpoint).
            message = f"rank {hit[0]} of {nodes}: {s.message}".strip()
            return s.model_copy(update={"message": message, "reclaiming": False})
    ended = [r for r in range(nodes) if r in ranks and ranks[r].state == AttemptState.SUCCEEDED]
    if len(ended) == nodes:
        first = ranks[0]
        return first.model_copy(update={"message": f"all {nodes} ranks ended; rank 0: {first.message}"})
    if any(s.state == AttemptState.RUNNING for s in ranks.values()) or ended:
        return AttemptStatus(state=AttemptState.RUNNING, message=f"{len(ended)} of {nodes} ranks ended")
    return AttemptStatus(state=AttemptState.PENDING)


def reported_ranks(store: JobStore, attempt: Attempt) -> dict[int, AttemptStatus]:
    """The ranks of this attempt that reported their exit (kept as job events)."""
    out: dict[int, AttemptStatus] = {}
    after = 0
    while True:
        page = store.events_after(attempt.job_id, after)
        for ev in page:
            if ev.kind == RANK_EXIT and ev.data.get("attempt") == attempt.id:
                out.setdefault(int(ev.data["rank"]), _exit_status(ev.data))
        if len(page) < 1000:
            return out
        after = page[-1].seq


def _exit_status(data: Mapping[str, Any]) -> AttemptStatus:
    code = int(data.get("exit_code", 1))
    return AttemptStatus(
        state=AttemptState.SUCCEEDED if code == 0 else AttemptState.FAILED,
        exit_code=code,
        log_tail=str(data.get("log_tail") or ""),
        message=f"exit code {code}",
    )


def rank_exit(
    store: JobStore,
    attempt: Attempt,
    rank: int,
    exit_code: int,
    log_tail: str,
    now: datetime,
    *,
    source: str = "",
) -> AttemptStatus:
    """Keep one rank's exit (once) and return the gang's status with it.

    `source` says where the exit was read when not from the rank's report (its console, say)."""
    nodes = store.get(attempt.job_id).spec.resources.nodes
    if not 0 <= rank < nodes:
        raise ValueError(f"rank: must be 0 … {nodes - 1} for this attempt")
    ranks = reported_ranks(store, attempt)
    if rank not in ranks:
        data = {"attempt": attempt.id, "rank": rank, "exit_code": exit_code, "log_tail": log_tail[-4096:]}
        said = f"rank {rank} exited {exit_code}" + (f", {source}" if source else "")
        store.record(attempt.job_id, now, kind=RANK_EXIT, message=said, data=data)
        ranks[rank] = _exit_status(data)
    return fold(nodes, ranks)


def gang_status(adapter: Adapter, attempt: Attempt, store: JobStore, *, fresh: bool = False) -> AttemptStatus:
    """The gang's status from each node at its backend, its ranks' own reports taking precedence;
    `fresh`: a node the backend does not list yet is pending (`hung.not_listed_yet`)."""
    gang = parse_gang_id(attempt.backend_id or "")
    assert gang is not None
    ranks = reported_ranks(store, attempt)
    for rank, node in enumerate(gang.nodes):
        if rank in ranks:
            continue  # a node that reported its exit may be powered off: its report stands
        try:
            ranks[rank] = adapter.status(node)
        except NotFoundError:
            ranks[rank] = AttemptStatus(state=AttemptState.PENDING) if fresh else vanished(attempt, node)
    return fold(len(gang.nodes), ranks)


def vanished(attempt: Attempt, backend_id: str) -> AttemptStatus:
    """What an instance the backend no longer knows means for its attempt.

    A spot instance the broker did not end was reclaimed: clouds release it (ECS deletes it
    after its Recycling notice; EC2 lists it only for a while), so a broker that polled after
    the release sees nothing. It is a preemption (the region is blocked, the job requeued),
    not a lost attempt counted against the job.
    """
    if attempt.offer.spot:
        return AttemptStatus(
            state=AttemptState.PREEMPTED,
            message=f"spot instance {backend_id} released by {attempt.site} (it no longer exists)",
        )
    return AttemptStatus(state=AttemptState.LOST, message=f"{backend_id} no longer exists")
