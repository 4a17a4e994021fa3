"""What the cloud adapters share for gang jobs: node marks, per-rank tokens, gang backend ids.

A gang attempt is one attempt (one token, one agent secret) like a Slurm gang; at a cloud it is
N instances in one placement group (EC2) or deployment set (ECS). Its backend id names the
group and the instances in rank order: ``gang:<group>:<rank 0 id>,<rank 1 id>,…``, so cancel
and terminate reach every node and the group with the one id the store keeps.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from adapters._tags import owner_prefix
from adapters.base import AdapterError
from broker.model import AttemptState, LaunchRequest, OwnedInstance, SiteId

log = logging.getLogger(__name__)

TAG_RANK = "szb:rank"
"""A gang node's rank (0 … N-1); every node of a gang carries the attempt's token tag too."""
GANG_PREFIX = "gang:"
GANG_PORT = 29500
"""MASTER_PORT of a gang unless the job's env sets one (PyTorch's default, as on Slurm)."""


@dataclass(frozen=True)
class GangId:
    """The parts of a gang backend id: its group and its instances in rank order."""

    group: str
    nodes: tuple[str, ...]

    def __str__(self) -> str:
        return f"{GANG_PREFIX}{self.group}:{','.join(self.nodes)}"


def parse_gang_id(backend_id: str) -> GangId | None:
    """The gang a backend id names, or None for a one-node id."""
    if not backend_id.startswith(GANG_PREFIX):
        return None
    group, _, nodes = backend_id[len(GANG_PREFIX) :].rpartition(":")
    return GangId(group, tuple(n for n in nodes.split(",") if n))


def is_gang(request: LaunchRequest) -> bool:
    """The launch is one node of a gang (it joins a group)."""
    return bool(request.group)


def client_token(request: LaunchRequest) -> str:
    """The cloud's idempotency token: the attempt's, per rank for a gang's nodes (≤ 64 chars)."""
    if is_gang(request):
        return f"{request.token[:56]}-r{request.node_rank}"
    return request.token[:64]


def group_name(broker_id: str, token: str) -> str:
    """The name of a gang's placement group / deployment set (idempotent per attempt token)."""
    return owner_prefix(broker_id) + token


def group_token(broker_id: str, name: str) -> str | None:
    """The attempt token a group of this broker is named after (None: not this broker's)."""
    prefix = owner_prefix(broker_id)
    return name[len(prefix) :] or None if name.startswith(prefix) else None


def owned_group(site: SiteId, broker_id: str, group: str, name: str) -> OwnedInstance | None:
    """A group of this broker as the reconciler lists it: a gang id without nodes, whose
    cancel deletes the group (once its instances are gone) when its attempt is over."""
    token = group_token(broker_id, name)
    if token is None:
        return None
    return OwnedInstance(
        site=site, backend_id=str(GangId(group, ())), token=token, state=AttemptState.RUNNING
    )


def gang_tags(request: LaunchRequest) -> dict[str, str]:
    """The rank mark of a gang's node (none for a one-node job)."""
    return {TAG_RANK: str(request.node_rank)} if is_gang(request) else {}


class CloudGangs:
    """Ending a gang and listing its groups, shared by the EC2 and ECS gang mixins."""

    site: SiteId
    GROUP_KIND: ClassVar[str]
    """What the cloud calls the group, for the log ("placement group", "deployment set")."""
    GROUP_GONE: ClassVar[str]
    """The error code of deleting a group that no longer exists."""

    if TYPE_CHECKING:  # the adapter's own, used here

        def _errors(self) -> AbstractContextManager[None]: ...
        def cancel(self, backend_id: str, token: str) -> None: ...

        # Each cloud's mixin: delete one group; list this broker's groups (named after tokens).
        def _delete_group(self, group: str) -> None: ...
        def owned_groups(self) -> list[OwnedInstance]: ...

    def cancel_gang(self, gang: GangId, token: str) -> None:
        """End every node, then delete the group. A group that still holds instances (they are
        shutting down) is left to the reconciler, which lists it (`owned_groups`)."""
        for node in gang.nodes:
            self.cancel(node, token)
        try:
            with self._errors():
                self._delete_group(gang.group)
        except AdapterError as exc:
            if exc.code == self.GROUP_GONE:
                return
            if not gang.nodes:
                raise  # the reconciler's own call: it tries again on its next pass
            log.warning("%s %s at %s not deleted yet: %s", self.GROUP_KIND, gang.group, self.site, exc)

    def listed_groups(self) -> list[OwnedInstance]:
        """`owned_groups`, or none when the groups cannot be listed (the instances still are)."""
        try:
            return self.owned_groups()
        except AdapterError as exc:
            log.warning("groups at %s not listed: %s", self.site, exc)
            return []
