"""`/metrics` while the database is away: the scrape answers, with `szb_store_up 0` and the
families read from the store left empty. Review: an API replica's /metrics answered 500 with a
traceback through a PostgreSQL restart, so Prometheus saw nothing, not even that the store was
away. Real PostgreSQL, the database really gone."""

from __future__ import annotations

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from broker.metrics import LiveCollector, LiveView
from broker.store import PostgresStore


def test_a_scrape_while_the_store_is_away_says_so_and_answers(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    view = LiveView(
        queue=store.active_counts,
        breakers=dict,
        blocklist_size=lambda: 0,
        unhealthy=dict,
        money=lambda: [("lab", 0.0, None)],
        heartbeat_lag=lambda: {str(a.site): 0.0 for a in store.live_attempts()},
        policy_hash=lambda: "abc",
        currency=lambda: "CNY",
    )
    registry = CollectorRegistry()
    registry.register(LiveCollector(view))
    try:
        assert b"szb_store_up 1.0" in generate_latest(registry)
        name = conninfo_to_dict(pg_dsn)["dbname"]
        admin_dsn = make_conninfo(pg_dsn, dbname="postgres")
        with psycopg.connect(admin_dsn, autocommit=True) as admin:  # every session ends, none comes back
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(str(name))))
        text = generate_latest(registry).decode()
        assert "szb_store_up 0.0" in text, text
        assert 'szb_policy_info{hash="abc"} 1.0' in text  # what does not need the store still shows
        assert "szb_queue_jobs{" not in text
    finally:
        store.close()
