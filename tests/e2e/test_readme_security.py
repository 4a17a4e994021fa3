"""The README's "Security model" commands, run as written from a copy of the repository's configs.

The one change to the copy: broker.yaml's listen addresses become port 0 on loopback, so
parallel test runs never fight over 50051/8081/9464; the client then finds the broker through
SZB_SERVER, as a user on another machine would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.brokerproc import ROOT


def readme_block(heading: str) -> list[str]:
    """Command lines of the first ```sh block under `heading`, without trailing comments."""
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, f"no sh block under {heading}"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_security_model_commands_run_as_written(tmp_path: Path) -> None:
    skip = shutil.ignore_patterns("tls")
    shutil.copytree(ROOT / "configs", tmp_path / "configs", ignore=skip)
    broker_yaml = tmp_path / "configs" / "broker.yaml"
    text = broker_yaml.read_text()
    for key in ("listen", "agent_http_listen", "metrics_listen"):
        text = re.sub(rf"(?m)^{key}: \S+", f"{key}: 127.0.0.1:0", text)
    broker_yaml.write_text(text)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SZB_")},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "GRPC_VERBOSITY": "ERROR",
    }
    commands = readme_block("### Tokens and roles")
    assert any("szb serve" in c for c in commands)
    server: subprocess.Popen[str] | None = None
    try:
        for command in commands:
            if "szb serve" in command:
                server = subprocess.Popen(
                    ["bash", "-c", command], cwd=tmp_path, env=env, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                )
                assert server.stdout is not None
                port = ""
                deadline = time.monotonic() + 60
                for line in server.stdout:
                    if m := re.search(r"serving on port (\d+)", line):
                        port = m.group(1)
                        break
                    assert time.monotonic() < deadline
                assert port, "the broker did not start"
                # Keep reading its log so a full pipe never blocks the broker.
                threading.Thread(target=server.stdout.read, daemon=True).start()
                env["SZB_SERVER"] = f"127.0.0.1:{port}"
                continue
            out = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                timeout=120,
            )
            assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
            if "--role operator" in command:
                env["SZB_TOKEN"] = out.stderr.split()[-1]
        tokens = (tmp_path / "configs" / "tokens.yaml").read_text()
        assert "role: operator" in tokens and env["SZB_TOKEN"] not in tokens
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
