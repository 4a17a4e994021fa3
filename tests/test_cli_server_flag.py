"""`--server` (and SZB_SERVER) is checked as HOST:PORT before any call, a usage error otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def szb(*argv: str, server: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real `szb` in a child process (gRPC's own stderr lines would show there)."""
    env = {k: v for k, v in os.environ.items() if k != "SZB_SERVER"}
    if server is not None:
        env["SZB_SERVER"] = server
    return subprocess.run([sys.executable, "-m", "broker.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_server_address_that_is_not_host_port_is_a_usage_error() -> None:
    """`--server ""` ended in gRPC's text and `UNKNOWN`, `--server 127.0.0.1` dialled port 443, a
    URL was looked up in DNS: each an exit 1 after a call. Found by a held-out review."""
    for argv, env in (
        (["list", "--server", ""], None),
        (["list", "--server", "127.0.0.1"], None),
        (["get", "j-1", "--server", "127.0.0.1:70000"], None),
        (["status"], "127.0.0.1"),  # SZB_SERVER is checked the same way
    ):
        out = szb(*argv, server=env)
        assert out.returncode == 2, (argv, env, out.stderr)
        assert "must be HOST:PORT" in out.stderr and "--server" in out.stderr, (argv, env, out.stderr)
        last = out.stderr.strip().splitlines()[-1]  # argparse's usage, then this one line: no gRPC text
        assert last.startswith(f"szb {argv[0]}: error: argument --server: must be HOST:PORT"), out.stderr
        assert "UNKNOWN" not in out.stderr and "dns" not in out.stderr, (argv, env, out.stderr)
    for url in ("http://127.0.0.1:47311", "https://127.0.0.1:47311/"):
        out = szb("list", "--server", url)
        assert out.returncode == 2, (url, out.stderr)
        last = out.stderr.strip().splitlines()[-1]
        assert "not a URL" in last and "try --server 127.0.0.1:47311" in last, (url, out.stderr)
    # `szb explain` without a server stays offline; an empty SZB_SERVER is "no server" there.
    out = szb("explain", str(ROOT / "configs/examples/hello.yaml"), "--policy",
              str(ROOT / "configs/policy.yaml"), "--tenant", "pku-nlp", server="")
    assert out.returncode == 0 and "Placement of" in out.stdout, out.stderr
