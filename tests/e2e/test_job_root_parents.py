"""The local executor's job_root is refused where another user could swap it, and a job's folders
are never a link: as root, the broker would chown and chmod whatever took their place (a held-out
review had a job's private uid take over a root-only folder, which the job's end then deleted)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters._sandbox import Sandbox
from adapters.base import ConfigError
from broker.model import SiteId

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user and private ids need root")


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder jobs may pass through (pytest's own are 0700): job_root must be reachable."""
    folder = Path(tempfile.mkdtemp(prefix="szb-job-root-", dir=os.environ.get("SZB_TEST_RUN_DIR")))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def sandbox(job_root: Path, data: Path) -> Sandbox:
    return Sandbox.from_config(SiteId("local"), {"job_root": str(job_root)}, data)


def test_a_job_root_in_a_folder_another_user_owns_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)  # they may rename job_root and put a link there
    with pytest.raises(ConfigError, match=f"{theirs} belongs to uid {nobody.pw_uid}"):
        sandbox(theirs / "jobs", tmp_path / "data")


def test_a_job_root_in_a_folder_everyone_may_write_is_refused_unless_sticky(
    tmp_path: Path, reachable: Path
) -> None:
    shared = reachable / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="may be written by others and is not sticky"):
        sandbox(shared / "jobs", tmp_path / "data")
    shared.chmod(0o1777)  # as /tmp: only an entry's owner may rename or remove it
    assert sandbox(shared / "jobs", tmp_path / "data").job_root == (shared / "jobs").resolve()


def test_a_link_in_a_jobs_folder_place_is_not_followed(tmp_path: Path, reachable: Path) -> None:
    box = sandbox(reachable / "jobs", tmp_path / "data")
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (box.job_root / "att-1").symlink_to(victim)
    os.lchown(box.job_root / "att-1", pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(ConfigError, match="is not a folder of the broker's own"):
        box.workdir("att-1", box.gids[0])
    (box.job_root / "att-2").mkdir()
    (box.job_root / "att-2" / "work").symlink_to(victim)
    with pytest.raises(ConfigError, match="work is not a folder of the broker's own"):
        box.workdir("att-2", box.gids[0])
    info = victim.stat()
    assert (info.st_uid, info.st_mode & 0o7777) == (0, 0o700) and list(victim.iterdir()) == []
    guard, work = box.workdir("att-3", box.gids[0])  # a fresh one is made and handed to the id
    assert work.stat().st_uid == box.gids[0] and guard.stat().st_uid == 0
