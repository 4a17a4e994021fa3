"""Bounded reads: a backend that stops answering holds no one longer than `wait_s`.

A cloud API that accepts connections and never answers holds each call for its SDK's read
timeout and retries: a minute and more. The dispatcher's loop awaits its status polls, listings
and capacity readings, so one such site would stall every other site's work, local jobs
included, and its hung calls would fill the default thread pool the store and the API share.
Here each read runs in a thread of its own (a daemon: a hung call never holds the broker's exit);
the caller waits at most `wait_s` from when the call began, then gets a `TransientError` while the
call runs on to the SDK's own timeout, and until it returns every read of that site fails at once
(the reconciler marks the site out of service meanwhile). A slow but healthy backend only waits:
no call queues behind another. Writes (submit, cancel) are never cut short: their outcome must
be known.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from adapters.base import Adapter, LogSource, TransientError
from adapters.wrapper import AdapterWrapper, LogSourceWrapper

T = TypeVar("T")

READS = frozenset({"offers", "capacity", "status", "kept_result", "list_owned"})
"""The calls cut short: what they would have said is read again on the next pass."""


class Unresponsive(TransientError):
    """The site did not answer a read within the broker's wait (or an earlier read still hangs)."""


class BoundedAdapter(AdapterWrapper):
    """An adapter whose reads give up after `wait_s`; see the module's docstring."""

    def __init__(self, inner: Adapter, wait_s: float) -> None:
        super().__init__(inner)
        self.wait_s = wait_s
        self._hung: tuple[str, Future[Any]] | None = None  # a read past its wait, still running
        self._lock = threading.Lock()

    def _call(self, call: str, fn: Callable[[], T]) -> T:
        if call not in READS:
            return fn()
        with self._lock:
            if self._hung is not None and not self._hung[1].done():
                raise Unresponsive(
                    self.site, "Unresponsive",
                    f"an earlier {self._hung[0]} has not answered after more than {self.wait_s:g}s; "
                    "its reads are skipped until it does",
                )
            self._hung = None
        running: Future[T] = Future()
        threading.Thread(target=_run, args=(fn, running), name=f"read-{self.site}", daemon=True).start()
        try:
            return running.result(timeout=self.wait_s)
        except FutureTimeout:
            with self._lock:
                self._hung = (call, running)
            raise Unresponsive(
                self.site, "Unresponsive", f"{call} did not answer within {self.wait_s:g}s"
            ) from None


def _run(fn: Callable[[], T], into: Future[T]) -> None:
    try:
        into.set_result(fn())
    except BaseException as exc:  # (handed to the caller, as a pool's future would)
        into.set_exception(exc)


class BoundedLogSource(BoundedAdapter, LogSourceWrapper):
    """A bounded adapter whose backend also serves job output (`adapters.base.LogSource`)."""


def bounded(adapter: Adapter, wait_s: float) -> BoundedAdapter:
    """`adapter` with its reads bounded; a `LogSource` stays one (checked on the class)."""
    if isinstance(adapter, LogSource):
        return BoundedLogSource(adapter, wait_s)
    return BoundedAdapter(adapter, wait_s)
