"""One serving broker per data dir: `szb serve` holds an exclusive lock on `<data_dir>/broker.lock`.

Two brokers on one data dir would each recover, reconcile and dispatch the same jobs from the
same store and the same local job folders (a second `szb serve` typed by mistake, a demo started
beside a running broker). The lock is the kernel's (flock): it ends with the process, however it
ends, so a broker killed with SIGKILL leaves nothing to clean up.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from broker.errors import BrokerError


class DataDirInUse(BrokerError):
    """Another live broker serves this data dir."""


def hold_data_dir(data_dir: Path) -> int | None:
    """Lock `data_dir` for this process (the descriptor stays open as long as it lives); DataDirInUse
    naming the holder's pid when another broker holds it. None when the lock file cannot be made
    (a read-only or full disk): the store, opened next, names that trouble in its own words."""
    try:
        fd = os.open(data_dir / "broker.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(
            f"data dir {data_dir} is served by another broker (pid {holder}): two would dispatch the "
            "same jobs; stop that one, or give this one a data_dir of its own"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:  # (a full disk: the lock holds, the pid is just not said)
        pass
    return fd


def release_data_dir(fd: int | None) -> None:
    """Give the data dir up (a broker stopping): another may serve it at once, this process too."""
    if fd is not None:
        os.close(fd)
