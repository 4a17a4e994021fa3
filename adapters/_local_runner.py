"""Runs one local job and records its exit status in files, so it outlives a broker restart.

Usage: python -m adapters._local_runner DIR -- ARGV...   (env and cwd come from the caller)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run ARGV with output to DIR/output.log and write DIR/exit_code when it ends."""
    attempt_dir = Path(argv[0])
    command = argv[argv.index("--") + 1 :]
    # Our own pid, for a broker that died before it could record it (it then follows us).
    pid_tmp = attempt_dir / "runner.pid.tmp"
    pid_tmp.write_text(str(os.getpid()))
    os.replace(pid_tmp, attempt_dir / "runner.pid")
    # The broker signals the whole process group on cancel: let the child react, then record.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(attempt_dir / "output.log", "ab") as log:
        try:
            child = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_default_sigterm,
            )
            code = child.wait()
        except OSError as exc:
            log.write(f"cannot start {command[0]!r}: {exc}\n".encode())
            code = 127
    # A child killed by signal N reports -N; shells report 128+N, which is what users expect.
    if code < 0:
        code = 128 - code
    tmp = attempt_dir / "exit_code.tmp"
    tmp.write_text(str(code))
    os.replace(tmp, attempt_dir / "exit_code")
    return 0


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
