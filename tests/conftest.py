"""Fixtures shared by the policy, catalog and placement tests, and how `pytest -n N` splits the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

from broker.cli import main
from tests.processes import kill_runner_groups, runners_under
from tests.slurm.groups import FIRST, SECOND, slurm_scope

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class FileScheduling(LoadScopeScheduling):
    """Each test file runs on one worker, and every Slurm test of one cluster on the same one.

    A file's broker and cloud doubles are module fixtures, so splitting a file would start them on
    every worker. The Slurm tests count on their cluster's GPUs being theirs, so two tests of one
    cluster must never run at once; `make test` starts two clusters so that two Slurm files can
    (tests/slurm/groups.py says which file uses which).
    """

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return slurm_scope(path) or path

    def _assign_work_unit(self, node: WorkerController) -> None:
        # The Slurm groups first, each to a worker of its own: they take the longest. (xdist
        # orders files by their number of tests, and the second group has few.)
        for scope in (SECOND, FIRST):
            if scope in self.workqueue:
                self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadScopeScheduling:
    """`pytest -n N`: the suite's own scheduling (xdist's loadgroup ignores groups added at collection)."""
    return FileScheduling(config, log)  # type: ignore[arg-type]


OWN_PG_DIR = "SZB_PG_RUN_DIR"
"""Set (to `SZB_PG_DIR`) when this run made the PostgreSQL server's folder and so stops the server."""


OWN_TMPDIR = "SZB_TEST_TMPDIR"
"""This run's temporary folder (its `TMPDIR`), removed when the run ends."""


def pytest_configure(config: pytest.Config) -> None:
    """Give this run its own PostgreSQL folder (see `_own_pg_dir`) and its own `TMPDIR`.

    Runs in the controlling process before xdist starts its workers, which inherit both. Every
    broker a test starts keeps its jobs' folders in `$TMPDIR/szb-jobs-<digest of its data dir>`,
    and the tests' ledgers live there too: under `/tmp` each run left a thousand folders behind.
    """
    if hasattr(config, "workerinput"):
        return
    _own_pg_dir()
    if OWN_TMPDIR not in os.environ:
        folder = tempfile.mkdtemp(prefix="szb-test-tmp-")
        os.chmod(folder, 0o1777)  # (as /tmp: a job's private uid writes the tests' ledgers here)
        os.environ["TMPDIR"] = os.environ[OWN_TMPDIR] = folder
        tempfile.tempdir = None  # (gettempdir() caches its first answer)


def _own_pg_dir() -> None:
    """Without `SZB_PG_DSN` or `SZB_PG_DIR`, give this run's PostgreSQL server a folder of its own.

    The first worker to need the server starts it there, and the controller stops it when all are
    done. A shared folder would let one run (or one worker) stop the server another still uses.
    """
    if os.environ.get("SZB_PG_DSN") or os.environ.get("SZB_PG_DIR"):
        return
    folder = tempfile.mkdtemp(prefix="szb-pg-")
    os.environ["SZB_PG_DIR"] = os.environ[OWN_PG_DIR] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop this run's own PostgreSQL server (if a test started it); remove its folders."""
    if hasattr(config, "workerinput"):
        return
    own_tmp = os.environ.pop(OWN_TMPDIR, None)
    if own_tmp and own_tmp == os.environ.get("TMPDIR"):
        shutil.rmtree(own_tmp, ignore_errors=True)
    folder = os.environ.get(OWN_PG_DIR)
    if not folder or folder != os.environ.get("SZB_PG_DIR"):
        return
    script = Path(__file__).resolve().parents[1] / "scripts" / "pg-test.sh"
    if (Path(folder) / "data").exists():
        subprocess.run([str(script), "stop"], capture_output=True, stdin=subprocess.DEVNULL, check=False)
    shutil.rmtree(folder, ignore_errors=True)


LEFTOVER_GRACE_S = 30.0
"""How long a job a test cancelled (or that was about to end) may take to go after the test."""


@pytest.fixture(autouse=True)
def no_local_job_outlives_the_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail a test that leaves a local job running; kill what it left.

    Local jobs outlive the broker by design (a restart finds them), so a test that stops its
    broker with a long job running leaves the job and its runner on the machine for good.
    Only runners under this run's temporary folder count: another run's are not ours.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(runners_under(base))
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (left := {p: c for p, c in runners_under(base).items() if p not in before}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    if left:
        kill_runner_groups(list(left))
        pytest.fail(f"the test left local jobs running (now killed): {sorted(left.values())}")


@pytest.fixture
def cli() -> Callable[[list[str]], int]:
    """Run `szb` in-process (exit code returned, output captured by capsys)."""
    return main


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A folder with the accelerator and regime catalogs next to where a policy will go."""
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(CONFIGS / name, tmp_path / name)
    (tmp_path / "catalog").mkdir()
    shutil.copy(CONFIGS / "catalog" / "aws_gpu_vms.csv", tmp_path / "catalog" / "aws_gpu_vms.csv")
    return tmp_path


@pytest.fixture
def write_policy(policy_dir: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = policy_dir / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
