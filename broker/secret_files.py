"""Which of the broker's secret-bearing files a sandboxed job could read, checked at `szb serve`.

Local jobs run under a private uid and gid each (no supplementary groups), so a file is open
to them when every folder above it lets "others" in and the file lets them read; the check
is made for the job user (`run_as`), which also counts what that user owns, so it errs
strict. A TLS key, or a broker.yaml holding a credential, open to jobs stops the broker; the
tokens file (hashes only) and files read for secrets (`KEY_from_file`, `SZB_*_FILE`) are
reported at start and in an operator's `szb status`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from broker.config import BrokerConfig
from broker.errors import BrokerError
from broker.logs import secret_key
from broker.store.snapshot import redact

log = logging.getLogger(__name__)


class SecretFileError(BrokerError):
    """A file holding the broker's secrets can be read by the job user; names it and the fix."""


@dataclass(frozen=True)
class JobAccount:
    """The user sandboxed jobs run as."""

    name: str
    uid: int


@dataclass(frozen=True)
class Exposure:
    what: str
    """The setting that names the file (`tls.key_file`, `tokens_file`, `broker.yaml`, ...)."""
    path: Path
    user: str
    fatal: bool

    def message(self) -> str:
        return (f"{self.what} {self.path} is readable by the job user {self.user}, so any tenant's "
                f"job can read it: chmod 600 {self.path}")


def untraversable(path: Path, uid: int) -> Path | None:
    """The first folder above `path` the user `uid` cannot enter (its group aside), or None."""
    for folder in reversed(path.parents):
        info = folder.stat()
        if not info.st_mode & (stat.S_IXUSR if info.st_uid == uid else stat.S_IXOTH):
            return folder
    return None


def replaceable_above(path: Path, owners: Collection[int]) -> tuple[Path, str] | None:
    """The first folder above `path` (resolved) in which a user outside `owners` could replace
    what follows it: one owned by another user, or writable by others without the sticky bit
    (a sticky folder lets only an entry's owner rename it), with why; None: none can."""
    for folder in path.parents:
        info = folder.stat()
        if info.st_uid not in owners:
            return folder, f"belongs to uid {info.st_uid}"
        others = info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_gid != 0)
        if others and not info.st_mode & stat.S_ISVTX:
            return folder, "may be written by others and is not sticky"
    return None


def readable_by(path: Path, uid: int) -> bool:
    """Whether the user `uid`, in no group of the file's, can open `path` for reading."""
    try:
        path = path.resolve()
        info = path.stat()
        if untraversable(path, uid) is not None:
            return False
    except OSError:
        return False
    return bool(info.st_mode & (stat.S_IRUSR if info.st_uid == uid else stat.S_IROTH))


def exposures(
    config: BrokerConfig, config_file: Path | None, account: JobAccount,
    environ: Mapping[str, str] | None = None,
) -> list[Exposure]:
    """The secret-bearing files `account` could read, fatal ones first."""
    found = [
        Exposure(what, path, account.name, fatal)
        for what, path, fatal in _secret_files(config, config_file, environ)
        if readable_by(path, account.uid)
    ]
    return sorted(found, key=lambda e: not e.fatal)


def _secret_files(
    config: BrokerConfig, config_file: Path | None, environ: Mapping[str, str] | None
) -> Iterator[tuple[str, Path, bool]]:
    """(setting, file, fatal) for every file the broker reads that holds a secret."""
    if config.tls is not None:
        yield "tls.key_file", config.tls.key_file, True
    if config_file is not None and _holds_credentials(config_file):
        yield "broker.yaml", config_file, True
    if config.tokens_file is not None:
        yield "tokens_file", config.tokens_file, False
    for site, settings in sorted(config.sites.items()):
        for key, value in settings.items():
            if key.endswith("_from_file"):
                yield f"sites.{site}.{key}", Path(str(value)), False
    env = os.environ if environ is None else environ
    for var in sorted(env):
        if var.startswith("SZB_") and var.endswith("_FILE") and env[var]:
            yield var, Path(env[var]), False


def _holds_credentials(config_file: Path) -> bool:
    """broker.yaml names a store DSN with a password or a site setting holding a secret."""
    try:
        data = YAML(typ="safe").load(config_file.read_text()) or {}
    except (OSError, YAMLError):
        return False
    if not isinstance(data, dict):
        return False
    store = data.get("store")
    if isinstance(store, dict) and isinstance(store.get("dsn"), str) and redact(store["dsn"]) != store["dsn"]:
        return True
    return _inline_secret(data.get("sites"))


def _inline_secret(value: Any, key: str = "") -> bool:
    if isinstance(value, dict):
        return any(_inline_secret(v, str(k)) for k, v in value.items())
    if isinstance(value, list):
        return any(_inline_secret(v, key) for v in value)
    # `KEY_from_file` / `KEY_from_env` and `*_file` name where a secret is, not the secret.
    named_elsewhere = key.endswith(("_from_file", "_from_env", "_file"))
    return secret_key(key) and not named_elsewhere and value not in (None, "")


def open_to_jobs(
    config: BrokerConfig, config_file: Path | None, accounts: Iterable[JobAccount]
) -> list[Exposure]:
    """Every exposure to any job user (a broker not running as root has none: no job user)."""
    return [e for account in sorted(set(accounts), key=lambda a: a.uid)
            for e in exposures(config, config_file, account)]


def check_at_start(config: BrokerConfig, config_file: Path | None, accounts: Iterable[JobAccount]) -> None:
    """SecretFileError for a key or credential jobs could read; a loud warning for the rest."""
    found = open_to_jobs(config, config_file, accounts)
    fatal = [e.message() for e in found if e.fatal]
    if fatal:
        raise SecretFileError("; ".join(fatal))
    for exposure in found:
        log.warning("%s", exposure.message())
