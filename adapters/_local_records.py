"""The local executor's attempt folders and processes: records, pids, signals, output tail.

Each attempt's folder holds `meta.json` (written atomically), the runner's own `runner.pid`,
`output.log`, and once it ends `exit_code` (or `cancelled`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.base import ConfigError, read_tail

LOG_TAIL_BYTES = 4096


def read_meta(path: Path) -> dict[str, Any]:
    """The attempt's record (empty when there is none or it is unreadable)."""
    try:
        data: dict[str, Any] = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def runner_pid(path: Path) -> int | None:
    """The pid the runner wrote for itself when it started (see `adapters._local_runner`)."""
    try:
        return int((path / "runner.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def safe_name(site: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name) or name.startswith("."):
        raise ConfigError(site, "BadAttemptId", "attempt id must be 1-128 chars of [A-Za-z0-9_.-]")
    return name


def read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells them apart.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def group_alive(pgid: int) -> bool:
    """Whether any process (zombies included) is still in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def output_tail(path: Path) -> str:
    return read_tail(path, LOG_TAIL_BYTES)
