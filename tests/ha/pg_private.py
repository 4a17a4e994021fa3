"""A PostgreSQL server of one test's own, which the test may stop and start (as an operator's
`pg_ctl restart` or an outage would) without disturbing the run's shared server."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.conftest import PG_SCRIPT, _missing_prerequisite

OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PrivateServer:
    """`scripts/pg-test.sh` in a folder of the test's own; stopped and started on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "SZB_PG_DIR": str(folder)}
        self._script("start")
        self.port = int((folder / "port").read_text())
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _script(self, *args: str) -> None:
        done = subprocess.run(
            [str(PG_SCRIPT), *args], env=self.env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 0, f"pg-test.sh {' '.join(args)}: {done.stderr}"

    def _ctl(self, *args: str) -> None:
        bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        subprocess.run(
            ["unshare", "--user", f"{bindir}/pg_ctl", *args, "-D", str(self.folder / "data")],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode, "-w", "-t", "60")

    def start(self) -> None:
        log = str(self.folder / "server.log")
        opts = f"-p {self.port} -k {self.folder} -h 127.0.0.1 {OPTIONS}"
        self._ctl("start", "-l", log, "-w", "-t", "60", "-o", opts)


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    reason = _missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    # A short folder: the server's socket path must stay within 107 bytes (a worker's tmp_path need not).
    folder = Path(tempfile.mkdtemp(prefix="szb-pg-"))
    try:
        server = PrivateServer(folder)
        try:
            yield server
        finally:
            subprocess.run([str(PG_SCRIPT), "stop"], env=server.env, capture_output=True, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
