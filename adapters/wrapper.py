"""A base for adapter wrappers that add one concern (metrics, leadership) around every call."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from adapters.base import Adapter, Capability, KeptResult, LogSource, TokenStatus
from broker.model import AttemptStatus, CapacitySnapshot, LaunchRequest, Offer, OwnedInstance, SiteId

T = TypeVar("T")


class AdapterWrapper:
    """Passes each backend call of `inner` through `_call(name, fn)`; everything else through."""

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner
        self.site: SiteId = inner.site

    def __getattr__(self, name: str) -> Any:
        # Adapter-specific attributes (caches the tests read, ping) are the inner one's.
        return getattr(self.inner, name)

    def _call(self, call: str, fn: Callable[[], T]) -> T:
        return fn()

    def unsupported(self) -> Mapping[Capability, str]:
        return self.inner.unsupported()

    def offers(self, now: datetime) -> Sequence[Offer]:
        return self._call("offers", lambda: self.inner.offers(now))

    def capacity(self, now: datetime) -> CapacitySnapshot | None:
        return self._call("capacity", lambda: self.inner.capacity(now))

    def submit(self, request: LaunchRequest) -> str:
        return self._call("submit", lambda: self.inner.submit(request))

    def status(self, backend_id: str) -> AttemptStatus:
        return self._call("status", lambda: self.inner.status(backend_id))

    def status_of(self, backend_id: str, token: str) -> AttemptStatus:
        # Every wrapper keeps the optional `TokenStatus` (the plain status when the inner lacks it).
        inner = self.inner
        if not isinstance(inner, TokenStatus):
            return self.status(backend_id)
        return self._call("status", lambda: inner.status_of(backend_id, token))

    def cancel(self, backend_id: str, token: str) -> None:
        self._call("cancel", lambda: self.inner.cancel(backend_id, token))

    def list_owned(self) -> Sequence[OwnedInstance]:
        return self._call("list_owned", lambda: self.inner.list_owned())

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        # Every wrapper keeps the optional `KeptResult` (None when the inner adapter lacks it).
        inner = self.inner
        if not isinstance(inner, KeptResult):
            return None
        return self._call("kept_result", lambda: inner.kept_result(backend_id))


class LogSourceWrapper(AdapterWrapper):
    """The same for a backend that also serves job output (`adapters.base.LogSource`)."""

    def read_log(self, backend_id: str, token: str, offset: int, limit: int) -> bytes:
        source = self.inner
        assert isinstance(source, LogSource)
        return self._call("read_log", lambda: source.read_log(backend_id, token, offset, limit))
