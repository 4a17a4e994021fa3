"""Whose files in `output_dir` the broker believes: those of the user the attempt's job ran as.

Every tenant's user may create files in `output_dir` (mode 3733), and every attempt's token is
in its job's comment, which every cluster user can list: one tenant's user could create
another's `<token>.out` or `<token>.rc` before its job does. So a job's files are read only
when they belong to the job's user (`adapters.base.written_by`); any other is treated as absent.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.slurm._records import slurm_number

NOBODY = -1
"""The owner to check files against when the job's user is not known: no file has it."""


def uid_of(user: str) -> int | None:
    """The uid of `user` on this host; None when it does not know the user."""
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def record_owner(job: Mapping[str, Any]) -> int:
    """The uid a slurmrestd job record runs as (`user_id`, else its `user_name` here), or NOBODY."""
    uid = slurm_number(job.get("user_id"))
    if uid is not None:
        return int(uid)
    found = uid_of(str(job.get("user_name") or "")) if job.get("user_name") else None
    return NOBODY if found is None else found


def foreign(paths: list[Path], owner: int) -> list[str]:
    """Those of `paths` that exist but are not `owner`'s own (with their owner), for a message."""
    said = []
    for path in paths:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_uid != owner or info.st_mode & 0o002:
            said.append(f"{path} (uid {info.st_uid}, mode {info.st_mode & 0o7777:o})")
    return said
