"""The image never carries secrets a quick tour wrote into the tree.

`docker/Dockerfile` copies `configs/` whole; after `szb tls init configs/tls` and
`szb token >> configs/tokens.yaml` (the README's Security model), a build put the TLS key and
the tokens file into an image layer, even though compose mounts over that folder later.
"""

from __future__ import annotations

import fnmatch

from tests.brokerproc import ROOT


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for these simple patterns: a path, or a folder above it, matches."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat.rstrip("/")) for pat in patterns for p in prefixes)


def test_secrets_and_local_state_stay_out_of_the_build_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for secret in ("configs/tls/server-key.pem", "configs/tokens.yaml", "docker/secrets/store_dsn",
                   ".szb/broker.db", ".venv/bin/python", ".git/config"):
        assert ignored(secret, patterns), secret
    for needed in ("broker/app.py", "adapters/local.py", "configs/policy.yaml", "docker/broker.yaml",
                   "pyproject.toml", "README.md"):
        assert not ignored(needed, patterns), needed
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "COPY configs /etc/szb" in dockerfile  # (why configs/ secrets must be ignored)
