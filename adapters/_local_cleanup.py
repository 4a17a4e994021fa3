"""What an ended local attempt leaves that the next holder of its private id could read.

A job's private uid is handed out again much later (`Sandbox.pick_gid`). Two things outlived
the job: its folder under `job_root`, sealed to root only by its runner on a normal end (a
runner killed at the end of a cancel's grace, or by OOM, never sealed it), and what it wrote
outside its folder (`/tmp`, `/var/tmp`, `/dev/shm`), which keeps its uid.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
"""World-writable folders a job may leave files in (only their top-level entries are looked at)."""


def seal(attempt_dir: Path) -> None:
    """The attempt's folder under `job_root` (its runner's plan names it) made root's alone."""
    try:
        plan = json.loads((attempt_dir / "launch.json").read_text())
    except (OSError, ValueError):
        return
    folder = plan.get("seal") if isinstance(plan, dict) else None
    if not isinstance(folder, str):
        return
    try:
        st = os.lstat(folder)
        if stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, 0, 0o700):
            os.chown(folder, 0, 0, follow_symlinks=False)
            os.chmod(folder, 0o700)
    except OSError:
        pass


def remove_owned(uid: int, dirs: Iterable[str] = SHARED_DIRS) -> int:
    """Remove the entries of `dirs` that `uid` owns (never following a link); how many went."""
    removed = 0
    for top in dirs:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if st.st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
            except OSError as exc:
                log.warning("could not remove %s left by uid %d: %s", entry.path, uid, exc)
    return removed
