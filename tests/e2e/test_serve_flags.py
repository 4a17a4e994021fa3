"""`szb serve` flags are checked as broker.yaml and `SZB_*` are, with the flag named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.brokerproc import ROOT


def test_a_bad_listen_flag_is_refused_like_the_file_and_env_refuse_it(tmp_path: Path) -> None:
    """`--listen 127.0.0.1:99999` served on port 34463 (the flags skipped the field checks), and
    `--listen nonsense` blamed a busy port. Found by a held-out review."""
    cases = {
        ("--listen", "127.0.0.1:99999"): "0-65535",
        ("--listen", "127.0.0.1:65536"): "0-65535",
        ("--listen", "-1"): "HOST:PORT",
        ("--listen", "nonsense"): "HOST:PORT",
        ("--metrics-listen", "127.0.0.1:70000"): "0-65535",
    }
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    runs = {}
    for i, (flag, value) in enumerate(cases):
        data = tmp_path / f"data{i}"
        args = ["serve", "--data-dir", str(data), flag, value]
        if flag != "--listen":
            args += ["--listen", "127.0.0.1:0"]
        runs[(flag, value)] = (data, subprocess.Popen(
            [sys.executable, "-m", "broker.cli", *args], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    try:
        for (flag, value), said in cases.items():
            _check_refused(flag, value, said, *runs[(flag, value)])
    finally:  # a broker that served is stopped, whichever case failed first
        for _, proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _check_refused(flag: str, value: str, said: str, data: Path, proc: subprocess.Popen[str]) -> None:
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it served on some port: stop it, then say so
        proc.kill()
        _, stderr = proc.communicate()
        stderr = f"(it served) {stderr}"
    assert proc.returncode == 1, (flag, value, stderr)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"szb: error: {flag}: must be HOST:PORT"), (flag, value, stderr)
    assert said in last and repr(value) in last, (flag, value, stderr)
    assert "in use" not in stderr and "Traceback" not in stderr, (flag, value, stderr)
    assert not (data / "broker.db").exists(), (flag, value)


def test_a_listen_host_that_does_not_resolve_is_told_so_not_blamed_on_a_busy_port(tmp_path: Path) -> None:
    """A well-formed HOST:PORT whose host no resolver knows was said to be "in use (another szb
    serve?) or not this host's". Found by a held-out review."""
    out = subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", "--data-dir", str(tmp_path / "data"),
         "--listen", "no-such-host.invalid:0"],
        cwd=ROOT, env={**os.environ, "GRPC_VERBOSITY": "NONE"}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "cannot listen on no-such-host.invalid:0 (listen)" in last, out.stderr
    assert "does not resolve" in last and "in use" not in last, out.stderr
