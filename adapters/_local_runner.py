"""Runs one local job and records its exit status in files, so it outlives a broker restart.

Usage: python -I _local_runner.py DIR   (DIR/launch.json is the plan; stdin carries the job's
whole environment as a JSON object). The runner keeps the broker's user and its own fixed
environment; the job drops to its own user and group, limits and cores, then executes with
its environment.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
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
    with open(attempt_dir / "output.log", "ab") as log:
        try:
            child = subprocess.Popen(
                plan["argv"],
                stdout=log,
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
            code = child.wait()
        except (OSError, subprocess.SubprocessError) as exc:
            message, code = _not_started(plan["argv"][0], env, exc)
            log.write(message.encode())
    # A child killed by signal N reports -N; shells report 128+N, which is what users expect.
    if code < 0:
        code = 128 - code
    if plan.get("seal"):  # the job is over: its folder becomes root's alone (ids are reused)
        try:
            os.chown(plan["seal"], 0, 0)
            os.chmod(plan["seal"], 0o700)
        except OSError:
            pass
    tmp = attempt_dir / "exit_code.tmp"
    tmp.write_text(str(code))
    os.replace(tmp, attempt_dir / "exit_code")
    return 0


def _not_started(program: str, env: dict[str, str], exc: BaseException) -> tuple[str, int]:
    """Why the job's program did not start, with the shell's exit code (127 not found, 126 not executable)."""
    path = os.get_exec_path(env)
    # exec reports EACCES when any PATH folder refused the job's user (root's ~/.local/bin),
    # even when no folder holds the program; the runner (the broker's user) can look.
    if (
        isinstance(exc, PermissionError)
        and "/" not in program
        and not any(os.path.isfile(os.path.join(folder, program)) for folder in path)
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
    if plan.get("cores"):
        os.sched_setaffinity(0, plan["cores"])
    for name, value in (plan.get("rlimits") or {}).items():
        which = getattr(resource, f"RLIMIT_{name}")
        hard = resource.getrlimit(which)[1]
        limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (limit, limit))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
