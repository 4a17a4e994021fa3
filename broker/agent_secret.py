"""Per-attempt agent secrets: a fresh random secret per attempt, kept only as its hash.

The secret reaches the job through its own environment (local, Slurm) or UserData (clouds)
and authenticates that attempt's agent reports. It is never the idempotency token, which
names the attempt at backends (tags, Slurm comments, file names) and grants nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

SECRET_BYTES = 32
"""256 bits of randomness per attempt."""

_NO_MATCH = hashlib.sha256(b"no attempt has this hash").hexdigest()


def new_agent_secret() -> tuple[str, str]:
    """A fresh secret and the hash the store keeps of it."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return secret, hash_agent_secret(secret)


def hash_agent_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def agent_secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Constant-time check; an unknown attempt (None) or an empty hash never matches."""
    expected = stored_hash or _NO_MATCH
    ok = hmac.compare_digest(hash_agent_secret(secret), expected)
    return ok and bool(stored_hash)


class SecretEscrow:
    """A launch's secret, held in the broker's private data dir only while it is in flight.

    Between recording an attempt and storing its backend id the broker may crash after the
    backend started the instance with the secret; the restarted broker adopts that instance
    and needs the same secret. The file is removed as soon as the launch is settled. Without
    a folder (or after losing the file) a resumed launch gets a new secret instead.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._failing = False

    def put(self, attempt_id: str, secret: str) -> None:
        """Keep the secret while its launch is in flight. A data dir that cannot take it (full, or
        read-only) costs only that: the launch goes on, and only a broker restarted in the middle
        of it mints a new secret. It never stops the dispatch pass (a held-out review of issue 11:
        with a PostgreSQL store and a full data dir the OSError failed every pass, and the job
        stayed PROVISIONING, its attempt holding a slot, until the broker was restarted)."""
        if self.folder is None:
            return
        path = self.folder / attempt_id
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # (never a cut secret for a resumed launch to use)
            if not self._failing:
                log.warning("cannot keep launch secrets in %s (%s): a broker restarted mid-launch "
                            "gives that launch a new secret", self.folder, exc.strerror or exc)
            self._failing = True
            return
        if self._failing:
            log.info("launch secrets are kept in %s again", self.folder)
        self._failing = False

    def get(self, attempt_id: str) -> str | None:
        if self.folder is None:
            return None
        try:
            return (self.folder / attempt_id).read_text() or None
        except OSError:
            return None

    def drop(self, attempt_id: str) -> None:
        if self.folder is not None:
            (self.folder / attempt_id).unlink(missing_ok=True)
