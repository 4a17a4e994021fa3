"""The local executor's attempt folders and processes: records, pids, signals, output tail.

Each attempt's folder holds `meta.json` (written atomically), the runner's own `runner.pid`,
`output.log`, and once it ends `exit_code` (or `cancelled`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.base import ConfigError, read_tail
from broker.model import AttemptState, AttemptStatus

LOG_TAIL_BYTES = 4096
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
MIN_MAX_OUTPUT_BYTES = 4096
_SIZE = re.compile(r"^([0-9]+)\s*(KiB|MiB|GiB)?$")
_UNITS = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def read_meta(path: Path) -> dict[str, Any]:
    """The attempt's record (empty when there is none or it is unreadable)."""
    try:
        data: dict[str, Any] = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def started_at(meta: Mapping[str, Any]) -> datetime | None:
    """When the executor started the attempt's process, by its record (None: not recorded)."""
    at = meta.get("started_at")
    return datetime.fromtimestamp(at, UTC) if isinstance(at, int | float) and at > 0 else None


def exit_status(meta: Mapping[str, Any], path: Path, tail: str) -> AttemptStatus:
    """An attempt whose runner recorded its exit code in `path`: it ran, from when its record
    says, until the code was written (a job that ended while the broker was down ends then, not
    when the restarted broker read it)."""
    exit_file = path / "exit_code"
    text = exit_file.read_text().strip()
    if not text:  # (a power loss before the runner synced it): the result is unknown, not a failure
        return AttemptStatus(state=AttemptState.LOST, log_tail=tail,
                             message="the exit code file is empty (lost in a power cut?): result unknown")
    code = int(text)
    state = AttemptState.SUCCEEDED if code == 0 else AttemptState.FAILED
    # Cancelled only if the stop came before the end: a job that wrote its exit code before the
    # cancel's mark (a cancel racing its end) ended on its own, and its result stands.
    marked = path / "cancelled"
    if marked.exists() and marked.stat().st_mtime_ns <= exit_file.stat().st_mtime_ns:
        state = AttemptState.CANCELLED
    ended = written_at(exit_file)
    cause = killed_by(code, meta.get("memory_gb")) if state == AttemptState.FAILED else ""
    return AttemptStatus(
        state=state, exit_code=code, log_tail=tail, started_at=started_at(meta), stopped_at=ended, cause=cause
    )


# What a process that outgrows its memory limit dies of: a failed allocation it does not check
# (SIGSEGV, SIGBUS), an abort on one (SIGABRT), the kernel's OOM killer under a cgroup (SIGKILL).
_MEMORY_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL)


def killed_by(code: int, memory_gb: object) -> str:
    """Why a job whose exit code says a signal ended it (128 + N, as a shell reports), if so."""
    try:
        sig = signal.Signals(code - 128)
    except ValueError:
        return ""
    why = f"killed by {sig.name}"
    if sig in _MEMORY_SIGNALS and isinstance(memory_gb, int | float):
        why += f"; it may have outgrown its memory limit (resources.memory_gb: {memory_gb:g})"
    return why


def written_at(path: Path) -> datetime | None:
    """When the file at `path` was last written (None: it cannot be read)."""
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def stop_deadline(path: Path, grace_s: float, now: float) -> tuple[float, bool]:
    """When an attempt being stopped must be gone (epoch seconds), and whether its processes were
    sent SIGTERM already. The first stop records its deadline in the attempt's folder: a broker
    restarted meanwhile (its reconciler stops the leftover) keeps it, so a crash neither cuts a
    preempted job's grace short nor interrupts its clean-up with a second SIGTERM."""
    mark = path / "stop_by"
    try:
        return float(mark.read_text()), True
    except (OSError, ValueError):
        mark.write_text(f"{now + grace_s:.3f}")
        return now + grace_s, False


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


def process_identity(pid: int) -> str | None:
    """Which process `pid` is: this boot's id and the process's start time (None: no such process).

    A pid is reused once its process ended (at once after a reboot): a recorded pid names the
    runner only while this identity is still the one recorded with it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{boot_id()}:{stat.rsplit(') ', 1)[1].split()[19]}"  # field 22: start time since boot


def boot_id() -> str:
    """This boot's random id (a new one at every boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def runner_alive(pid: int, identity: str | None) -> bool:
    """Whether the runner recorded as `pid` (with `identity`, when it was taken) still runs."""
    return pid_alive(pid) and (identity is None or process_identity(pid) == identity)


def kill_leftovers(uid: int | None, pgid: int | None, runner: str | None, attempt: str | None = None) -> None:
    """SIGKILL what an attempt whose runner died left running, and wait (5 s at most) for it to go.

    With a private uid that is every process of that uid, wherever it went (no other process
    holds it: `Sandbox.pick_gid`), except one started for another attempt that holds the uid now
    (`_another_attempts`; `attempt` is this one's id); without one, the runner's process group,
    unless that group is now another process's: `runner` is the identity recorded for the runner.
    """
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if uid is None and pgid is not None and not _group_still_the_jobs(pgid, runner):
            return
        if uid is not None:
            mine = [pid for pid in _pids() if _real_uid(pid) == uid and pid_alive(pid)]
            holders = _Holders(uid)  # (one scan of the runners per pass, however many processes)
            left = [pid for pid in mine if not _another_attempts(pid, attempt, holders)]
            if left and len(left) == len(mine):
                _kill_as(uid)  # all at once: a job forking on and on outruns any scan-and-kill
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        elif pgid is not None and group_alive(pgid):
            left = [pgid]
            signal_group(pgid, signal.SIGKILL)
        else:
            left = []
        if not left:
            return
        time.sleep(0.05)


_KILL_ALL = "import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept OSError: pass"


def _kill_as(uid: int) -> None:
    """kill(-1, SIGKILL) as `uid`: every process of that uid in one sweep the kernel makes
    atomic with fork (a child forked meanwhile dies with its parent)."""
    import subprocess
    import sys

    try:
        subprocess.run(
            [sys.executable, "-I", "-c", _KILL_ALL],
            user=uid, group=uid, extra_groups=[], env={}, cwd="/", timeout=10, check=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # not root: the scan-and-kill below goes on
        pass


def _group_still_the_jobs(pgid: int, runner: str | None) -> bool:
    """Whether process group `pgid` can still be the job's: its number is free or its runner's.

    The kernel keeps a pid number out of use while any process is in a group of that id, so
    a live process holding the number that is not the runner means the job's group emptied and
    the number went to a stranger (a pid is reused within minutes on a busy host), whose own
    session a SIGKILL to the group would end.
    """
    leader = process_identity(pgid)
    return leader is None or (runner is not None and leader == runner)


def _another_attempts(pid: int, attempt: str | None, holders: _Holders) -> bool:
    """Whether the process was started for an attempt other than `attempt` that holds the uid now.

    Once a lost attempt's processes are all gone its uid is free, and another broker on the host
    (a demo beside a test run) may hand it to its own job before this one's kill comes: that job
    carries its own SZB_ATTEMPT_ID, and that attempt's runner (root's, alive) ran it as the uid.
    The variable alone is the job's to write: a process naming an attempt with no such runner, or
    one whose runner runs another uid, is still killed, as is one that dropped the variable,
    unless its parent is such a runner (its own child, between the runner's setuid and exec).
    """
    if attempt is None:
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    ids = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"SZB_ATTEMPT_ID=")]
    if not ids:  # (a runner's child between its setuid and its exec still has the runner's env)
        started_for = _runner_attempt(_parent(pid))
        return started_for is not None and started_for != attempt and started_for in holders.attempts()
    if ids[0] == attempt.encode():
        return False
    return ids[0].decode(errors="replace") in holders.attempts()


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("PPid:")), None)
    except (OSError, ValueError):
        return None


def _runner_attempt(pid: int | None) -> str | None:
    """The attempt whose live runner `pid` is, if it is one."""
    folder = None if pid is None else _runner_folder(pid)
    return None if folder is None else Path(folder).name


def _runner_folder(pid: int) -> str | None:
    """The attempt folder of `pid` if it is a live runner (root's `_local_runner.py` process)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return None
    if len(argv) >= 2 and argv[-2].endswith(b"_local_runner.py") and _real_uid(pid) == os.getuid():
        return argv[-1].decode(errors="replace")
    return None


class _Holders:
    """The attempts whose live runners (on this host, any broker's) run their job as `uid`: read
    once, when first asked (a job's thousand processes naming some attempt cost one scan)."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self._attempts: set[str] | None = None

    def attempts(self) -> set[str]:
        if self._attempts is None:
            self._attempts = set()
            for folder in _runner_folders():
                try:
                    plan = json.loads((folder / "launch.json").read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(plan, dict) and plan.get("uid") == self.uid:
                    self._attempts.add(folder.name)
        return self._attempts


def _runner_folders() -> list[Path]:
    """The attempt folders of the live runners (root's `_local_runner.py` processes) on this host."""
    return [Path(folder) for pid in _pids() if (folder := _runner_folder(pid)) is not None]


def _pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
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


def max_output_bytes(site: str, config: Mapping[str, Any]) -> int:
    """The local site's `max_output_bytes`: bytes, or a number with KiB, MiB or GiB (default 64 MiB).

    A job's output file lives beside the broker's store: the runner keeps at most this much
    of it (the head, then the tail), so a job printing without end cannot fill that disk.
    """
    value = config.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)
    match = None if isinstance(value, bool) else _SIZE.match(str(value).strip())
    size = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if size < MIN_MAX_OUTPUT_BYTES:
        raise ConfigError(
            site,
            "BadMaxOutputBytes",
            f"max_output_bytes must be a size of at least {MIN_MAX_OUTPUT_BYTES} bytes, such as "
            f"67108864 or 64MiB (the default), not {value!r}",
        )
    return size


def output_tail(attempt: Path) -> str:
    """The last lines of an attempt's output; of a running job whose output was cut, the end
    the runner keeps beside it (`output.tail`), since the file's own end is its cut notice."""
    tail = attempt / "output.tail"
    return read_tail(tail if tail.exists() else attempt / "output.log", LOG_TAIL_BYTES)


def inventory_of(config: Mapping[str, Any]) -> tuple[dict[str, int], float]:
    """The host's accelerator slots per model and its CPUs, from the site's config.

    An explicit `accelerators` ({model: slots}) and `cpus` win; without them the policy's
    partitions for this site declare them, and the CPUs default to the host's cores.
    """
    inventory = {str(k): int(v) for k, v in dict(config.get("accelerators", {})).items()}
    cpus = config.get("cpus")
    for part in config.get("partitions", ()):
        count = int(part.get("count_per_node", 0)) * int(part.get("nodes", 1))
        if part.get("accelerator") and count and "accelerators" not in config:
            inventory[str(part["accelerator"])] = inventory.get(str(part["accelerator"]), 0) + count
        elif not part.get("accelerator") and cpus is None and part.get("cpus_per_node"):
            cpus = float(part["cpus_per_node"]) * int(part.get("nodes", 1))
    return inventory, float(cpus if cpus is not None else (os.cpu_count() or 1))
