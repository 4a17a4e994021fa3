"""Backend calls only from the active scheduler: every adapter call checks the lease first.

A leader paused past its lease (SIGSTOP, a long stall) may have been replaced while it slept;
when it resumes, its own monotonic clock says the lease ran out, and every backend call is
refused here before it is sent, even before the elector's thread has noticed the takeover.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from adapters.base import Adapter, LogSource, TransientError
from adapters.wrapper import AdapterWrapper, LogSourceWrapper
from broker.store import FencedOut, JobStore

T = TypeVar("T")


class NotLeaderError(TransientError):
    """This process is not (or no longer surely) the active scheduler: nothing was sent.

    Transient, not a failure of the attempt: the call is the active scheduler's to make, and it
    makes it again with the same token; failing the attempt here would blame a healthy launch.
    """


class LeaderOnlyAdapter(AdapterWrapper):
    """An adapter whose calls go out only while `may_act()` holds."""

    def __init__(self, inner: Adapter, may_act: Callable[[], bool]) -> None:
        super().__init__(inner)
        self._may_act = may_act
        self.refused = 0
        """Calls refused because this process was not the leader (read by tests and bench)."""

    def _call(self, call: str, fn: Callable[[], T]) -> T:
        if not self._may_act():
            self.refused += 1
            raise NotLeaderError(self.site, "NotLeader", f"{call} refused: not the active scheduler")
        return fn()


class LeaderOnlyLogSource(LeaderOnlyAdapter, LogSourceWrapper):
    """The same for a backend that also serves job output."""


def leader_only(adapter: Adapter, may_act: Callable[[], bool]) -> LeaderOnlyAdapter:
    if isinstance(adapter, LogSource):
        return LeaderOnlyLogSource(adapter, may_act)
    return LeaderOnlyAdapter(adapter, may_act)


WRITES = frozenset(
    {
        "transition",
        "record",
        "record_many",
        "create_attempt",
        "update_attempt",
        "reserve_spend",
        "settle_spend",
        "publish_site_report",
        "drop_cancel_request",
    }
)
"""The store calls a scheduler makes that change state (submissions come from API replicas)."""


class NotLeaderWriteError(FencedOut):
    """A scheduler write refused in-process: this process's lease is not surely valid (the
    database's fence refuses it the same way once another term began)."""


class LeaderOnlyStore:
    """The store as the scheduler's dispatcher sees it: writes only while `may_act()` holds.

    The database's fence (the epoch check in each write) is the guarantee; this refuses
    earlier, before a paused leader that just resumed even reaches the database.
    """

    def __init__(self, inner: JobStore, may_act: Callable[[], bool]) -> None:
        self._inner = inner
        self._may_act = may_act

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in WRITES:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not self._may_act():
                raise NotLeaderWriteError(f"{name} refused: not the active scheduler")
            return value(*args, **kwargs)

        return guarded
