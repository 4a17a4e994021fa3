"""A PostgreSQL server for the session and a fresh database per test.

`SZB_PG_DSN` points at an existing server when set; otherwise `scripts/pg-test.sh start` runs
one (as root, through `unshare --user`). In the run's own folder (`tests/conftest.py`) the first
worker to need it starts it and the run stops it at its end; in a folder the caller chose
(`SZB_PG_DIR`), a session stops the server only if it started it.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.brokerproc import ROOT
from tests.conftest import OWN_PG_DIR

PG_SCRIPT = ROOT / "scripts" / "pg-test.sh"
_names = itertools.count()


def _missing_prerequisite() -> str | None:
    """Why this machine cannot run the throwaway server, or None when it can."""
    if os.geteuid() != 0:
        return "scripts/pg-test.sh needs root (apt-get, unshare --user) and SZB_PG_DSN is not set"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed and SZB_PG_DSN is not set"
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "user namespaces are not allowed (unshare --user failed) and SZB_PG_DSN is not set"
    return None


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PG_SCRIPT), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of a PostgreSQL server's maintenance database (`postgres`)."""
    dsn = os.environ.get("SZB_PG_DSN")
    if dsn:
        yield dsn
        return
    reason = _missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    own = os.environ.get(OWN_PG_DIR)
    if own and own == os.environ.get("SZB_PG_DIR"):
        already_running = True  # the run stops it once every worker is done
        with open(os.path.join(own, "start.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one worker starts it; the others find it answering
            started = _script("start")
    else:
        already_running = _script("status").returncode == 0
        started = _script("start")
    if started.returncode != 0:
        pytest.fail(f"scripts/pg-test.sh start failed:\n{started.stderr}", pytrace=False)
    env = _script("env")
    if env.returncode != 0 or "SZB_PG_DSN=" not in env.stdout:
        pytest.fail(f"scripts/pg-test.sh env failed:\n{env.stderr}", pytrace=False)
    try:
        yield env.stdout.strip().split("SZB_PG_DSN=", 1)[1]
    finally:
        if not already_running:
            _script("stop")


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"szb_test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield make_conninfo(pg_server, dbname=name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
