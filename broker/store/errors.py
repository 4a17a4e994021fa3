"""The store's errors: what a caller may retry, and what it may not."""

from __future__ import annotations

from broker.errors import BrokerError


class StoreError(BrokerError):
    """Root of store errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, restarting, refusing connections): retry later.
    `summary` is what a client is told: no host, port, path or driver text (the log has them)."""

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or message


class LeaseBlocked(StoreError):
    """A leadership claim waited longer than it was allowed for a write holding the lease row."""


class JobNotFoundError(StoreError):
    """No such job (or not visible to the asking tenant)."""


class FencedOut(StoreError):
    """A fenced write refused: another scheduler claimed leadership since this one's epoch."""
