"""The one contract every backend implements, and the one error tree they all raise.

Error tree (named for what dispatch does next)::

    AdapterError(site, code, message)     unknown code: kept, reported, attempt failed
    ├── CapacityError                     block (site, type, zone) for a TTL, try the next offer
    ├── QuotaError                        block what the quota counts for a TTL (the region, or
    │   │                                 the types and market it names), try the next offer
    │   └── SpotQuotaError                block the region's spot market only (on demand is open)
    ├── TransientError                    back off and retry the same call (tenacity)
    ├── AuthError                         open the provider's circuit breaker
    ├── ConfigError                       open the provider's circuit breaker
    ├── UnsupportedError                  never again for this offer; do not wait
    ├── RequestError                      the job's own request is refused: that job tries other sites
    └── NotFoundError                     the thing is gone (reconciliation treats it so)

Adapters are synchronous: SDKs are, and the dispatcher runs each call in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from broker.errors import BrokerError
from broker.model import (
    AttemptStatus,
    CapacitySnapshot,
    LaunchRequest,
    Offer,
    OwnedInstance,
    SiteId,
)


class AdapterError(BrokerError):
    """Root of every error an adapter raises; `code` keeps the backend's own code."""

    def __init__(self, site: str, code: str, message: str) -> None:
        super().__init__(f"{site}: {code}: {message}")
        self.site = site
        self.code = code
        self.message = message


class CapacityError(AdapterError):
    """The site has no stock for this instance type/zone right now."""


class QuotaError(AdapterError):
    """The account's quota or limit in this region is exhausted.

    The adapter that knows what the quota counts narrows it (`types`, `market`); a gang launch
    refused at a later node sets `nodes`: room was left for the nodes before it."""

    def __init__(
        self, site: str, code: str, message: str, *, types: tuple[str, ...] = (), market: str = "any"
    ) -> None:
        super().__init__(site, code, message)
        self.types = types
        """Instance types or families (`broker.quota_scope.family_of`) it counts; empty: all."""
        self.market = market
        """`ondemand` or `spot` when the quota counts that market only; `any` when both."""
        self.nodes = 1
        """The least nodes a job needs to meet this refusal."""


class SpotQuotaError(QuotaError):
    """The account's spot quota in this region is exhausted; its on-demand limit is another
    quota, so on-demand offers there are still open."""


class TransientError(AdapterError):
    """Throttled, timed out or briefly unavailable: retrying the same call may work."""


class AuthError(AdapterError):
    """Credentials are missing, wrong or not allowed to do this."""


class ConfigError(AdapterError):
    """The site is configured wrongly (bad image, subnet, partition …)."""


class UnsupportedError(AdapterError):
    """The backend can never run this offer; do not retry it."""


class RequestError(AdapterError):
    """The job's own request is refused (user data or a parameter over a limit, say).

    It says nothing about the site's health: it never opens a breaker or blocks an offer.
    """


class NotFoundError(AdapterError):
    """The instance, job or resource does not exist (any more)."""


NO_IMAGES = "the local executor runs commands directly, not images"
"""Why a local site runs no container image (also said offline: `broker.offline_images`)."""

NO_RUNTIME = "no container_runtime configured for this cluster"
"""Why a Slurm site runs no container image (also said offline: `broker.offline_images`, which
reads them here: importing the adapters for two sentences cost `szb simulate` ~0.2 s at start)."""


class Capability(StrEnum):
    SPOT = "spot"
    CONTAINER_IMAGES = "container_images"
    ACCELERATORS = "accelerators"
    LIVE_PRICES = "live_prices"
    CAPACITY = "capacity"
    """The site reports free capacity and expected wait (on-prem style)."""
    STOCK = "stock"
    """The site reports which zones have stock (cloud style)."""
    QUEUES_JOBS = "queues_jobs"
    """The backend keeps a queue of its own (a batch system): the broker may send a job
    there to pend. Without it an attempt starts or fails, and nothing waits at the site."""


@runtime_checkable
class Adapter(Protocol):
    """A backend where jobs run.

    Contract: every mutating call carries the attempt's idempotency token and is idempotent
    per token (a retry never starts a second instance); reads are eventually consistent;
    backend ids are unique per site. Errors are always `AdapterError` subclasses.
    """

    site: SiteId

    def unsupported(self) -> Mapping[Capability, str]:
        """Required. Capabilities this backend lacks, each with a reason `explain` can quote.

        Every capability not listed is promised (see `supports`), so list all that are missing.
        """
        ...

    def offers(self, now: datetime) -> Sequence[Offer]:
        """Required. Current offers with prices, stock and expected wait as far as known."""
        ...

    def capacity(self, now: datetime) -> CapacitySnapshot | None:
        """Optional (None when not known). Free/total accelerators and queue per partition."""
        ...

    def submit(self, request: LaunchRequest) -> str:
        """Required. Start the attempt; returns the backend id. Idempotent per request.token."""
        ...

    def status(self, backend_id: str) -> AttemptStatus:
        """Required. Where the attempt is now; NotFoundError when the backend forgot it."""
        ...

    def cancel(self, backend_id: str, token: str) -> None:
        """Required. Stop and release the attempt; a second call is a no-op. A backend that marks
        its jobs with their tokens leaves a job under `backend_id` with another token alone."""
        ...

    def list_owned(self) -> Sequence[OwnedInstance]:
        """Required. Everything at this site that carries this broker's marks."""
        ...


@runtime_checkable
class LogSource(Protocol):
    """Optional: a backend whose jobs' output the broker can read (`szb logs`).

    Backends without it (cloud instances) send their output through the agent endpoint.
    """

    def read_log(self, backend_id: str, token: str, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes of the attempt's output from byte `offset` (b"" when none yet).

        NotFoundError when the backend has no output for the attempt at all.
        """
        ...


@runtime_checkable
class KeptResult(Protocol):
    """Optional: a cloud whose instances' bootstrap keeps the job's result where the broker can
    read it without the agent (the console), so a job whose report cannot reach the broker still ends."""

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        """The job's result its bootstrap kept (the console's SZB-RESULT); None when there is none.

        TransientError when it cannot be read yet (the caller asks again later).
        """
        ...


@runtime_checkable
class TokenStatus(Protocol):
    """Optional: a backend that may give an attempt's backend id to another job (Slurm, after
    slurmctld lost the attempt's job) and marks each job with its attempt's token."""

    def status_of(self, backend_id: str, token: str) -> AttemptStatus:
        """As `Adapter.status`, of the attempt with `token`: a job under `backend_id` that is not
        that attempt's is not read as its (the attempt's own job is gone)."""
        ...


@runtime_checkable
class Reconfigurable(Protocol):
    """Optional: an on-prem backend a policy reload reaches without a restart (its partitions)."""

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """Take the site's reloaded config: running work keeps running, new starts respect it."""
        ...


@runtime_checkable
class GangLauncher(Protocol):
    """Optional: a cloud that starts a gang's N nodes together in one placement group.

    `submit` with `request.group` set starts node `request.node_rank` in that group, idempotent
    per (token, rank); `cancel` of a gang backend id (`adapters._gang.GangId`) terminates every
    node and then deletes the group.
    """

    def create_group(self, request: LaunchRequest) -> str:
        """The attempt's placement group (EC2) or deployment set (ECS); idempotent per token."""
        ...

    def find_node(self, token: str, rank: int) -> str | None:
        """The instance already started for this token and rank (any state), if any."""
        ...

    def node_address(self, backend_id: str) -> str:
        """A node's private address (the master address of a gang's rank 0); "" when unknown."""
        ...


def supports(adapter: Adapter, capability: Capability) -> bool:
    """Whether the adapter has the capability (it is not among those it says it lacks)."""
    return capability not in adapter.unsupported()


def status_for(adapter: Adapter, backend_id: str, token: str) -> AttemptStatus:
    """The attempt's status: read with its token where the backend checks it (`TokenStatus`)."""
    if isinstance(adapter, TokenStatus):
        return adapter.status_of(backend_id, token)
    return adapter.status(backend_id)


def open_output(path: Path, owner: int | None = None) -> BinaryIO:
    """Open a job's output file for reading, refusing anything but a plain file of one name
    (and, given `owner`, one of that uid's that others may not write).

    Jobs can write the folder their output lives in (Slurm's `output_dir`), and the broker
    reading it is often root: a job that swapped its output file for a symbolic link, a hard
    link or a FIFO would have the broker read, for `szb logs` and log tails, a file the job
    cannot (the store, a key) or block on it forever. Raises OSError for such a file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError(errno.EPERM, "not a plain file of its own", str(path))
        if owner is not None and not written_by(info, owner):
            raise OSError(errno.EPERM, "not the job's user's own file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def written_by(info: os.stat_result, owner: int) -> bool:
    """The file is `owner`'s and no one else may write it. In a folder every tenant's user may
    write (Slurm's `output_dir`), one user can create the file another's job is to write."""
    return info.st_uid == owner and not info.st_mode & stat.S_IWOTH


def read_file_chunk(path: Path, offset: int, limit: int, owner: int | None = None) -> bytes | None:
    """Bytes [offset, offset + limit) of a job's output file; None when there is no such plain file
    (of `owner`'s, when given: see `open_output`)."""
    try:
        with open_output(path, owner) as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EPERM):  # a link or a FIFO the job put there
            return None
        raise


def read_tail(path: Path, limit: int, owner: int | None = None) -> str:
    """The file's last `limit` bytes as text ("" when unreadable or not `owner`'s), from a
    character's start."""
    try:
        with open_output(path, owner) as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return ""
    if size > limit:
        # The cut may fall inside a multi-byte character (Chinese is three bytes in UTF-8): drop
        # its continuation bytes (10xxxxxx) rather than show the user a replacement mark.
        skip = 0
        while skip < 3 and skip < len(data) and data[skip] & 0xC0 == 0x80:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", "replace")


class AdapterFactory(Protocol):
    """What an entry point in `shangzhuang_broker.adapters` must be (usually the class)."""

    def __call__(self, site: SiteId, config: Mapping[str, Any], /) -> Adapter: ...
