"""Durable state: the store contract and its implementations."""

from broker.store.base import (
    JobNotFoundError,
    JobPage,
    JobStore,
    SpendEntry,
    StoreError,
    Submission,
)
from broker.store.postgres import PostgresStore
from broker.store.sqlite import SqliteStore

__all__ = [
    "JobNotFoundError",
    "JobPage",
    "JobStore",
    "PostgresStore",
    "SpendEntry",
    "SqliteStore",
    "StoreError",
    "Submission",
]
