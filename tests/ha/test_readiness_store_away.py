"""Readiness follows the store. Review: through a PostgreSQL outage an API replica's health
answered SERVING for every service while every call it took failed (`szb status` among them),
so a balancer kept sending it calls. Now `shangzhuang.broker.v1.BrokerService` answers
NOT_SERVING while the store cannot be read and SERVING once it can; the whole server's health
(`""`, the liveness probe) stays SERVING. Real PostgreSQL, the database really refusing."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.brokerproc import szb
from tests.ha.conftest import Cluster

BROKER_SERVICE = "shangzhuang.broker.v1.BrokerService"


def until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_an_api_replica_is_not_ready_while_its_store_is_away(cluster: Cluster) -> None:
    api = cluster.start("api")

    def health(service: str = "") -> str:
        args = ("health", "--service", service) if service else ("health",)
        return szb(api, "", *args).stdout.strip()

    assert health(BROKER_SERVICE) == "SERVING" and health() == "SERVING"
    name = str(conninfo_to_dict(cluster.dsn)["dbname"])
    admin = psycopg.connect(make_conninfo(cluster.dsn, dbname="postgres"), autocommit=True)
    try:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        until(lambda: health(BROKER_SERVICE) == "NOT_SERVING")
        assert health() == "SERVING"  # alive: a liveness probe must not restart it
        status = szb(api, "", "status")
        assert status.returncode != 0
        assert "readiness: NOT_SERVING until the store answers a read" in api.text()
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
        admin.close()
    until(lambda: health(BROKER_SERVICE) == "SERVING")
    assert "readiness: SERVING again" in api.text()
