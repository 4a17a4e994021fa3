"""`make check-protos` compares what the protos generate with broker/api without rewriting it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
    }


def _check(repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run(["sh", "scripts/check-protos.sh"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_stale_broker_api_fails_every_run_and_is_left_as_it_was(tmp_path: Path) -> None:
    """It regenerated into broker/api itself, so after one failing run the next passed with the
    stale code "fixed" in the tree. Found by a held-out review."""
    repo = tmp_path / "repo"
    for part in ("scripts", "protos", "broker/api"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    current = _check(repo)
    assert current.returncode == 0 and "generated code is current" in current.stdout, current.stderr
    proto = repo / "protos/shangzhuang/broker/v1/job.proto"
    proto.write_text(proto.read_text() + "\nmessage ReviewOnlyProbe { string note = 1; }\n")
    before = _digests(repo / "broker/api")
    for run in (1, 2):
        out = _check(repo)
        assert out.returncode == 1, (run, out.stdout, out.stderr)
        assert "broker/api is stale" in out.stderr, (run, out.stderr)
        assert _digests(repo / "broker/api") == before, f"run {run} rewrote broker/api"
