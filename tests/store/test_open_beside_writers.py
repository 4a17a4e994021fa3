"""Opening a store beside processes already writing to it takes no table lock (PostgreSQL).

Every `PostgresStore` ran its schema's `CREATE INDEX IF NOT EXISTS` statements on open, in one
transaction. Each takes a SHARE lock on its table even when the index exists, so a CLI command
or a new replica opening the database waited on any writer's open transaction and, holding the
locks it had already taken, deadlocked with a scheduler writing two tables (seen in CI while an
HA test read the attempts of a running cluster). An up-to-date schema is now only read.
"""

from __future__ import annotations

import threading

import psycopg

from broker.store.postgres import PostgresStore


def test_a_store_opens_while_a_writer_holds_its_tables(pg_dsn: str) -> None:
    PostgresStore(pg_dsn).close()  # the schema exists
    with psycopg.connect(pg_dsn) as writer:
        # A scheduler's transaction in flight: it has written to jobs and attempts, not committed.
        writer.execute("UPDATE jobs SET message = message WHERE id = 'none'")
        writer.execute("UPDATE attempts SET error = error WHERE id = 'none'")
        opened: list[PostgresStore] = []
        failed: list[BaseException] = []

        def open_store() -> None:
            try:
                opened.append(PostgresStore(pg_dsn))
            except BaseException as exc:  # reported below
                failed.append(exc)

        opening = threading.Thread(target=open_store, daemon=True)
        opening.start()
        opening.join(timeout=30)
        blocked = opening.is_alive()
        writer.rollback()  # lets a blocked open finish, so nothing is left behind
        opening.join(timeout=30)
    for store in opened:
        store.close()
    assert not blocked, "opening the store waited for another transaction's row writes"
    assert not failed, failed
