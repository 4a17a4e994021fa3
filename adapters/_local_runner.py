"""Runs one local job and records its exit status in files, so it outlives a broker restart.

Usage: python -I _local_runner.py DIR   (DIR/launch.json is the plan; stdin carries the job's
whole environment as a JSON object). The runner keeps the broker's user and its own fixed
environment; the job drops to its own user and group, limits and cores, then executes with
its environment. The job's output reaches DIR/output.log through the runner, which caps it
(`max_output_bytes`): the file lives beside the broker's store, which a job printing without
end would otherwise starve of disk. Self-contained: -I keeps the repository off sys.path.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    """Run the plan's argv with output to DIR/output.log and write DIR/exit_code when it ends."""
    attempt_dir = Path(argv[0])
    plan: dict[str, Any] = json.loads((attempt_dir / "launch.json").read_text())
    env: dict[str, str] = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    # Our own pid, for a broker that died before it could record it (it then follows us).
    pid_tmp = attempt_dir / "runner.pid.tmp"
    pid_tmp.write_text(str(os.getpid()))
    os.replace(pid_tmp, attempt_dir / "runner.pid")
    # The broker signals the whole process group on cancel: let the child react, then record.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The exit code's file takes its disk space now: a disk that fills while the job runs
    # must not cost a finished job its result (the broker would call it lost and run it again).
    exit_tmp = attempt_dir / "exit_code.tmp"
    exit_tmp.write_text(" " * EXIT_CODE_ROOM)
    with open(attempt_dir / "output.log", "ab", buffering=0) as log:
        out = CappedOutput(log, attempt_dir / "output.tail", int(plan.get("max_output_bytes") or DEFAULT_CAP))
        read_end, write_end = os.pipe()
        try:
            child = subprocess.Popen(
                plan["argv"],
                stdout=write_end,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=plan["cwd"],
                env=env,
                user=plan.get("uid"),
                group=plan.get("gid"),
                extra_groups=[] if plan.get("gid") is not None else None,
                umask=0o077,
                preexec_fn=lambda: _confine(plan),
            )
            os.close(write_end)
            code = _copy(read_end, child, out)
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(write_end)
            message, code = _not_started(plan["argv"][0], env, exc)
            out.write(message.encode())
        os.close(read_end)
        out.close()
    # A child killed by signal N reports -N; shells report 128+N, which is what users expect.
    if code < 0:
        code = 128 - code
    if plan.get("seal"):  # the job is over: its folder becomes root's alone (ids are reused)
        try:
            os.chown(plan["seal"], 0, 0)
            os.chmod(plan["seal"], 0o700)
        except OSError:
            pass
    _record_exit(exit_tmp, code)
    return 0


EXIT_CODE_ROOM = 16
"""Bytes the exit code's file is given before the job starts (an int, space-padded)."""
RECORD_RETRY_S = 2.0
OUT_OF_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
"""Failures a wait can mend: the disk or the quota has room again later, a filesystem that went
read-only on an error (`errors=remount-ro`) is mended and remounted."""


def _record_exit(tmp: Path, code: int) -> None:
    """Write `code` into the file reserved for it, then give it its name; retry while out of room.

    While the runner lives the broker sees the attempt running, so a write that still fails
    for want of space (another full filesystem, a quota) or on a disk gone read-only waits here
    instead of losing the result (the job would be called lost and run again). Any other
    failure (the attempt's folder deleted) no wait would mend: give up.
    """
    while True:
        try:
            with open(tmp, "r+b") as f:
                f.write(str(code).encode().ljust(EXIT_CODE_ROOM))
                f.flush()
                os.fsync(f.fileno())  # after a power loss the renamed file holds the code, not blanks
            os.replace(tmp, tmp.with_name("exit_code"))
            return
        except OSError as exc:  # (the runner's stderr is /dev/null: nobody to tell)
            if exc.errno not in OUT_OF_ROOM:
                return
            time.sleep(RECORD_RETRY_S)


DEFAULT_CAP = 64 * 1024 * 1024
MAX_TAIL = 1024 * 1024
NOTICE_ROOM = 512
"""Bytes of the cap kept for the notices the runner writes into a cut output (and of lost output)."""
TAIL_EVERY_S = 1.0


class CappedOutput:
    """The job's output file, at most `cap` bytes: the head, and once cut, a note and the tail.

    Past the head the output is counted and its last `tail` bytes kept in memory (and in
    `tail_path`, rewritten about once a second, for the broker's log tail of a running job).
    At the end the tail is appended after a note of how much was left out, so the file only
    ever grows: a reader following it by byte offset never sees a byte change.
    """

    def __init__(self, file: Any, tail_path: Path, cap: int) -> None:
        self.file, self.tail_path, self.cap = file, tail_path, cap
        self.tail_size = min(MAX_TAIL, cap // 4)
        self.head_left = cap - self.tail_size - NOTICE_ROOM
        self.cutting = False
        self.cut = 0
        """Bytes past the head (the tail's among them)."""
        self.tail = bytearray()
        self.tail_written = 0.0
        self.tail_dirty = False
        self.lost = 0
        """Bytes the file refused (a full disk): the job runs on, and the end says so."""
        self.lost_why = ""

    def _put(self, data: bytes) -> None:
        """Write all of `data` that the file takes; what it refuses is counted, not fatal."""
        view = memoryview(data)
        while view:
            try:
                view = view[self.file.write(view) :]
            except OSError as exc:
                self.lost += len(view)
                self.lost_why = exc.strerror or str(exc)
                return

    def write(self, data: bytes) -> None:
        if not self.cutting:
            head = data[: self.head_left]
            self._put(head)
            self.head_left -= len(head)
            data = data[len(head) :]
            if not data:
                return
            self.cutting = True
            self._put(
                f"\n[szb: output beyond {self.cap} bytes (max_output_bytes) is not kept while the"
                f" job runs; it goes on, and its last {self.tail_size} bytes are added here when it"
                " ends]\n".encode()
            )
        self.cut += len(data)
        self.tail += data
        if len(self.tail) > self.tail_size:
            del self.tail[: len(self.tail) - self.tail_size]
        self.tail_dirty = True

    def save_tail(self, now: float) -> None:
        """Rewrite the tail file (atomically) when the tail changed and a second passed."""
        if not self.tail_dirty or now - self.tail_written < TAIL_EVERY_S:
            return
        tmp = self.tail_path.with_name(self.tail_path.name + ".tmp")
        try:
            tmp.write_bytes(self.tail)
            os.replace(tmp, self.tail_path)
        except OSError:  # a full disk: try again next time
            return
        self.tail_written, self.tail_dirty = now, False

    def close(self) -> None:
        """Append what was cut's note and the tail (the file stays within its cap), and what was lost."""
        if self.cutting:
            dropped = self.cut - len(self.tail)
            self._put(
                f"\n[szb: {dropped} bytes of output were cut here (max_output_bytes {self.cap});"
                f" the last {len(self.tail)} bytes follow]\n".encode()
            )
            self._put(bytes(self.tail))
            self.tail_path.unlink(missing_ok=True)
        if self.lost:
            self._put(
                f"\n[szb: {self.lost} bytes of output could not be written ({self.lost_why})]\n".encode()
            )


def _copy(fd: int, child: subprocess.Popen[bytes], out: CappedOutput) -> int:
    """Copy the job's output into `out` until the job ends; returns its exit status.

    The job's own end ends the copy, not the pipe's: a process it left in the background
    keeps the pipe open, and waiting for that would keep the attempt running.
    """
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            data = os.read(fd, 1 << 16)
            if not data:
                return child.wait()
            out.write(data)
        out.save_tail(time.monotonic())
        code = child.poll()
        if code is not None:
            break
    # What the job wrote just before it ended is still in the pipe: read what is there now.
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    for _ in range(1024):
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not data:
            break
        out.write(data)
    return code


def _open_to_all(folder: str) -> bool:
    """Whether any user may search `folder` and every folder above it (o+x all the way down)."""
    current = Path(os.path.abspath(folder))
    for part in (current, *current.parents):
        try:
            if not os.stat(part).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _not_started(program: str, env: dict[str, str], exc: BaseException) -> tuple[str, int]:
    """Why the job's program did not start, with the shell's exit code (127 not found, 126 not executable)."""
    path = os.get_exec_path(env)
    # exec reports EACCES when any PATH folder refused the job's user (root's ~/.local/bin),
    # even when no folder holds the program. The runner (root) looks, but only in folders every
    # user may search: one closed to the job (another tenant's, /root) must not tell it what it
    # holds (126 against 127 would).
    if (
        isinstance(exc, PermissionError)
        and "/" not in program
        and not any(os.path.isfile(os.path.join(f, program)) for f in path if _open_to_all(f))
    ):
        exc = FileNotFoundError()
    if isinstance(exc, OSError) and exc.filename not in (None, program):  # e.g. its workdir
        return f"cannot start {program!r}: {exc}\n", 127
    if isinstance(exc, FileNotFoundError) and "/" in program:
        return f"cannot start {program!r}: no such file\n", 127
    if isinstance(exc, FileNotFoundError):
        folders = os.pathsep.join(path)
        return f"cannot start {program!r}: command not found in the job's PATH ({folders})\n", 127
    if isinstance(exc, PermissionError):
        return f"cannot start {program!r}: Permission denied (not executable by the job's user)\n", 126
    return f"cannot start {program!r}: {exc}\n", 127


def _confine(plan: dict[str, Any]) -> None:
    """In the job process, after it took its user and group, before it executes."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # No setuid program raises it (systemd's NoNewPrivileges): one a job left in /tmp ran as a
    # later job's reused uid would have let that job read the other's secrets.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    if plan.get("cores"):
        os.sched_setaffinity(0, plan["cores"])
    for name, value in (plan.get("rlimits") or {}).items():
        which = getattr(resource, f"RLIMIT_{name}")
        hard = resource.getrlimit(which)[1]
        limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (limit, limit))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
