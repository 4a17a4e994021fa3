"""Two test runs on one machine never stop each other's services (the `make test` set-up).

`make test` takes a fresh folder and free ports from scripts/test-env.sh. Here a second Slurm
cluster (with its own munged) and a second PostgreSQL are started and stopped the same way
while this session's services keep answering: before, both scripts used fixed folders and the
Slurm one fixed ports and the system's munged, so one run's `stop` ended the other's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.brokerproc import ROOT

SCRIPTS = ROOT / "scripts"


def sh(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def run_env() -> dict[str, str]:
    """A second run's environment, exactly as the Makefile makes it."""
    out = subprocess.run([str(SCRIPTS / "test-env.sh")], capture_output=True, text=True, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SZB_", "SLURM_"))}
    env.update(dict(re.findall(r"^export (\w+)=(\S+)$", out.stdout, re.M)))
    return env


def test_test_env_gives_a_fresh_folder_and_distinct_free_ports() -> None:
    a, b = run_env(), run_env()
    try:
        assert a["SZB_TEST_RUN_DIR"] != b["SZB_TEST_RUN_DIR"]
        for env in (a, b):
            assert Path(env["SZB_TEST_RUN_DIR"]).is_dir()
            assert env["SZB_SLURM_DIR"].startswith(env["SZB_TEST_RUN_DIR"])
            assert env["SZB_PG_DIR"].startswith(env["SZB_TEST_RUN_DIR"])
            assert env["SZB_SLURM_B_DIR"].startswith(env["SZB_TEST_RUN_DIR"])
            assert env["SZB_SLURM_B_DIR"] != env["SZB_SLURM_DIR"]
            # `make test`'s two clusters: three ports each, and the next after each first slurmd's
            slurmds = ("SZB_SLURMD_PORT", "SZB_SLURM_B_SLURMD_PORT")
            names = ("SZB_SLURM_REST_PORT", "SZB_SLURMCTLD_PORT",
                     "SZB_SLURM_B_REST_PORT", "SZB_SLURM_B_CTLD_PORT")
            ports = {int(env[k]) for k in (*names, *slurmds)}
            assert len(ports | {int(env[k]) + 1 for k in slurmds}) == 8
    finally:
        for env in (a, b):
            shutil.rmtree(env["SZB_TEST_RUN_DIR"], ignore_errors=True)


def _needs_root_and(*programs: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("starting Slurm / PostgreSQL needs root")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def test_a_second_slurm_cluster_starts_and_stops_without_touching_this_one() -> None:
    _needs_root_and("slurmctld", "slurmd", "slurmrestd", "munged", "sbatch")
    if not os.environ.get("SZB_SLURM_URL"):
        pytest.skip("SZB_SLURM_URL is not set: no session cluster to protect (make test sets it)")
    mine = {**os.environ}
    assert sh(SCRIPTS / "slurm-cluster.sh", "status", env=mine).returncode == 0
    other = run_env()
    try:
        started = sh(SCRIPTS / "slurm-cluster.sh", "start", env=other)
        assert started.returncode == 0, started.stderr
        url = sh(SCRIPTS / "slurm-cluster.sh", "env", env=other).stdout
        assert f":{other['SZB_SLURM_REST_PORT']}" in url and os.environ["SZB_SLURM_URL"] not in url
        # Its ports too: a test restarting one of its daemons with these lines (the second
        # cluster of `make test`) would otherwise rewrite its slurm.conf with the caller's ports.
        said = dict(re.findall(r"^export (\w+)=(\S+)$", url, re.M))
        ports = ("SZB_SLURM_REST_PORT", "SZB_SLURMCTLD_PORT", "SZB_SLURMD_PORT")
        assert {k: said.get(k) for k in ports} == {k: other[k] for k in ports}, url
        # Its own munged, on a socket in its folder (not the system's).
        conf = Path(other["SZB_SLURM_DIR"], "etc", "slurm.conf").read_text()
        assert f"AuthInfo=socket={other['SZB_SLURM_DIR']}/munge/munge.socket" in conf
        # A job runs there, through that munged.
        job = sh(
            "sbatch",
            "--wrap",
            "true",
            "-p",
            "cpu",
            "-o",
            "/dev/null",
            env={**other, "SLURM_CONF": f"{other['SZB_SLURM_DIR']}/etc/slurm.conf"},
        )
        assert job.returncode == 0 and "Submitted batch job" in job.stdout, job.stderr
    finally:
        stopped = sh(SCRIPTS / "slurm-cluster.sh", "stop", env=other)
        shutil.rmtree(other["SZB_TEST_RUN_DIR"], ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    # This session's cluster (munge included) is still up.
    after = sh(SCRIPTS / "slurm-cluster.sh", "status", env=mine)
    assert after.returncode == 0, after.stdout + after.stderr


def test_a_second_postgres_starts_and_stops_without_touching_this_one() -> None:
    _needs_root_and("unshare")
    dsn = os.environ.get("SZB_PG_DSN")
    if not dsn:
        pytest.skip("SZB_PG_DSN is not set: no session PostgreSQL to protect (make test sets it)")
    other = run_env()
    try:
        started = sh(SCRIPTS / "pg-test.sh", "start", env=other)
        if started.returncode != 0 and "not installed" in started.stderr:
            pytest.skip("postgresql is not installed")
        assert started.returncode == 0, started.stderr
        theirs = sh(SCRIPTS / "pg-test.sh", "env", env=other).stdout
        assert theirs.strip() and dsn not in theirs
    finally:
        sh(SCRIPTS / "pg-test.sh", "stop", env=other)
        shutil.rmtree(other["SZB_TEST_RUN_DIR"], ignore_errors=True)
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)
