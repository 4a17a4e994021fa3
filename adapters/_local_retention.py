"""How long the local executor keeps the folders of attempts that ended (`keep_finished_attempts`).

Each attempt's folder under `<data_dir>/local/` holds its output; without a retention a
long-running broker's data dir (the disk its store is on) grows without bound. Folders of
attempts that ended longer ago than the retention are removed, at start and then periodically;
a live attempt's folder never is, nor one whose end the broker has not learnt yet. The job's
last lines stay in the store. The attempt's folder under `job_root` (the job's HOME and TMPDIR,
root's alone once it ended) goes with it: nobody can read it any more, and a job's scratch there
(checkpoints, datasets) is often far larger than its output.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.base import ConfigError, NotFoundError
from broker.durations import format_duration, parse_duration

log = logging.getLogger(__name__)

KEY = "keep_finished_attempts"
SEEN_ENDED = "ended_seen"
"""Written in an attempt's folder once the broker learnt of its end; the retention counts from it."""
PRUNE_EVERY_S = 600.0
"""The periodic removal runs at most this often (and at least as often as the retention)."""


def keep_duration(value: object) -> timedelta:
    """The retention a `keep_finished_attempts` value names; ValueError unless a positive duration."""
    keep = parse_duration(value)
    if keep <= timedelta(0):
        raise ValueError("must be a positive duration such as 30d or 12h")
    return keep


class Retention:
    """Removes the folders of attempts that ended more than `keep` ago (None: keeps them all)."""

    def __init__(self, site: str, root: Path, keep: timedelta | None, job_root: Path | None = None) -> None:
        self.site = site
        self.root = root
        self.keep = keep
        self.job_root = job_root
        self._next_s = 0.0

    @classmethod
    def from_config(
        cls, site: str, root: Path, config: Mapping[str, Any], job_root: Path | None = None
    ) -> Retention:
        """The local site's retention; ConfigError naming the key for a value that is not one."""
        value = config.get(KEY)
        try:
            keep = None if value is None else keep_duration(value)
        except ValueError as exc:
            raise ConfigError(site, "BadKeepFinishedAttempts", f"{KEY} {exc}, not {value!r}") from exc
        return cls(site, root, keep, job_root)

    def prune(self, now_s: float, live: Callable[[Path], bool]) -> list[str]:
        """Remove the ended attempts' folders older than the retention, if due; returns their names.

        `now_s`: the wall clock (folder times are file times); `live`: whether an attempt still runs.
        """
        if self.keep is None or now_s < self._next_s:
            return []
        keep_s = self.keep.total_seconds()
        self._next_s = now_s + min(keep_s, PRUNE_EVERY_S)
        removed = []
        for path in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                ended = _ended_at(path)
                if ended is None or now_s - ended <= keep_s or live(path):
                    continue
            except OSError:  # removed meanwhile
                continue
            if not self._remove_job_folder(path.name):  # first: the attempt's folder records its end
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        if removed:
            log.info("local site %s: removed %d attempt folder(s) older than %s (%s)",
                     self.site, len(removed), format_duration(self.keep), KEY)
        return removed

    def _remove_job_folder(self, name: str) -> bool:
        """Remove the attempt's folder under job_root (one the broker made, never a link); False
        when it could not: the attempt's folder then stays, so a later pass tries again."""
        if self.job_root is None:
            return True
        guard = self.job_root / name
        try:
            if stat.S_ISDIR(os.lstat(guard).st_mode):
                shutil.rmtree(guard)
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.warning("local site %s: could not remove %s: %s", self.site, guard, exc)
            return False
        return True

    def removed(self, backend_id: str) -> NotFoundError | None:
        """Why an attempt's folder is missing, when the retention may have removed it."""
        if self.keep is None:
            return None
        return NotFoundError(
            self.site,
            "OutputRemoved",
            f"the output of local attempt {backend_id} was removed by retention: its folder is"
            f" kept for {format_duration(self.keep)} after the attempt ended ({KEY})",
        )


def seen_ended(path: Path) -> None:
    """Mark that the broker learnt the attempt's end (a poll, or its own stop): the retention
    counts from the last such mark. Never before: a folder of an attempt that ended while the
    broker was down holds the exit code the broker has yet to read, or it would run the job
    again. From the last, not the first: a broker that could not record the end (its store
    full or away) polls again, each poll marks anew, and the folder stays until it stops asking."""
    marker = path / SEEN_ENDED
    try:
        if path.is_dir():
            marker.touch()
    except OSError as exc:  # a full disk: marked on a later poll
        log.info("%s not marked as ended: %s", path.name, exc)


def _ended_at(path: Path) -> float | None:
    """When the broker learnt that the attempt ended (None: it has not yet)."""
    marker = path / SEEN_ENDED
    return marker.stat().st_mtime if marker.exists() else None
