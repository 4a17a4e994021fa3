"""Durable state: the store contract and its implementations."""

from broker.store._audit import (
    AUDIT_KINDS,
    EVENT,
    KEEP_REFUSALS,
    REFUSAL,
    REFUSED,
    AuditCursor,
    AuditFilter,
    PolicyVersion,
    RefusedSubmission,
)
from broker.store._queue_keys import UNGROUPED
from broker.store.base import (
    FairUsage,
    FencedOut,
    JobMove,
    JobNotFoundError,
    JobPage,
    JobStore,
    LeaseBlocked,
    LeaseRow,
    ReclaimBooking,
    ReclaimState,
    SpendEntry,
    StoreError,
    StoreUnavailable,
    Submission,
)
from broker.store.postgres import PostgresStore
from broker.store.sqlite import SqliteStore

__all__ = [
    "AUDIT_KINDS",
    "EVENT",
    "KEEP_REFUSALS",
    "REFUSAL",
    "REFUSED",
    "UNGROUPED",
    "AuditCursor",
    "AuditFilter",
    "FairUsage",
    "FencedOut",
    "JobMove",
    "JobNotFoundError",
    "JobPage",
    "JobStore",
    "LeaseBlocked",
    "LeaseRow",
    "PolicyVersion",
    "PostgresStore",
    "ReclaimBooking",
    "ReclaimState",
    "RefusedSubmission",
    "SpendEntry",
    "SqliteStore",
    "StoreError",
    "StoreUnavailable",
    "Submission",
]
