"""The secret part of the names of an attempt's own files in `output_dir`.

Every cluster user can read an attempt's token (its job's comment: `squeue -o %k`) and create
files in `output_dir`: with names made of the token alone, one tenant's user could make another's
output file first and read what that job writes into it. So a job's own files are named
`<token>.<key>.<job id>.*` (`_script.file_stem`), the key an HMAC of the token under a secret only
the broker reads (`<output_dir>/.szb-file-key`, its own, mode 0600). The names are written into the
batch script alone, which Slurm shows only to the job's user and administrators (unlike its comment
and StdOut).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pwd
import secrets
import threading
import time
from pathlib import Path

from adapters.base import ConfigError, open_output
from broker.secret_files import replaceable_above

SECRET_BYTES = 32
KEY_FILE = ".szb-file-key"


class FileKey:
    """The broker's secret for `output_dir` (made on first use; brokers sharing the folder share it)."""

    def __init__(self, site: str, output_dir: Path) -> None:
        self.site = site
        self.path = output_dir / KEY_FILE
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def stem(self, token: str) -> str:
        """`<token>.<key>`: the start of the names of the token's job's own files."""
        mac = hmac.new(self._get(), token.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{token}.{mac}"

    def _get(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = self._load()
            return self._secret

    def _load(self) -> bytes:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._make()
        except OSError as exc:
            raise ConfigError(self.site, "FileKey", f"cannot make {self.path}: {exc}") from exc
        for _ in range(20):  # another broker sharing the folder may be making it this instant
            said = self._read()
            if isinstance(said, bytes):
                return said
            time.sleep(0.05)
        raise ConfigError(self.site, "FileKey", f"{self.path} {said!s}: remove it (a new one is made)")

    def _make(self) -> None:
        """Write a new secret unless there is one; linked into place whole, never overwritten."""
        if os.path.lexists(self.path):
            return
        tmp = self.path.with_name(f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(SECRET_BYTES))
            os.link(tmp, self.path)
        except FileExistsError:
            pass  # another broker's came first: that one is everyone's
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> bytes | str:
        """The secret, or what is wrong with the file: any user may create files in output_dir,
        so only a private one of this broker's user is believed."""
        try:
            with open_output(self.path, os.geteuid()) as f:
                mode, data = os.fstat(f.fileno()).st_mode, f.read(SECRET_BYTES + 1)
        except OSError as exc:
            return f"is not this broker's own plain file ({exc.strerror})"
        if mode & 0o077:
            return f"is readable by others (mode {mode & 0o777:o})"
        return data if len(data) == SECRET_BYTES else f"holds {len(data)} bytes, not {SECRET_BYTES}"


def ready_output_dir(site: str, output_dir: Path, site_user: str) -> None:
    """Make `output_dir` if missing. ConfigError when that fails, or when a user other than the
    broker's, the site's job user or root could remove or replace what is in it: the default under
    /tmp may be another user's, made first, and its owner could delete any job's result or the key."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        owners = {os.geteuid(), 0}
        with contextlib.suppress(KeyError):  # (a user only the cluster's nodes know)
            owners.add(pwd.getpwnam(site_user).pw_uid)
        unsafe = replaceable_above(output_dir / KEY_FILE, owners)
    except OSError as exc:
        raise ConfigError(site, "OutputDir", f"cannot create {output_dir}: {exc}") from exc
    if unsafe is not None:
        folder, why = unsafe
        raise ConfigError(site, "OutputDir", f"{folder} {why}: another user could remove or replace the job "
                          f"files in {output_dir}; name an output_dir of the broker's own")
