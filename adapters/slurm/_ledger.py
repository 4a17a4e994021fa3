"""Which Slurm job each idempotency token started: memory, marker files, slurmctld, then the job's word.

``<output_dir>/<token>.jobid`` outlives slurmctld's MinJobAge purge: empty means a submit
was attempted (look before submitting again), otherwise it holds the job id, then the uid the
job runs as (whose files alone are believed once slurmctld forgets the job: `_owned`). The batch script
writes its own job id to ``<token>.<key>.started`` as it starts: a broker killed between Slurm taking
the job and the marker's write, and down longer than MinJobAge, finds the job it ran there (it
submitted the token again, and the job ran twice).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.base import read_file_chunk
from adapters.slurm._jobs import JobTable
from adapters.slurm._owned import NOBODY, record_owner, uid_of
from adapters.slurm._records import decode_marks
from adapters.slurm._script import ScriptSettings, output_file, started_file

MARKER_BYTES = 64
"""A marker holds a Slurm job id; more than this is not one of ours."""


class TokenLedger:
    """Token -> job id for one adapter; callers serialize submits around `find` + `record`."""

    def __init__(self, settings: ScriptSettings, jobs: JobTable) -> None:
        self.settings = settings
        self.output_dir = settings.output_dir
        self.jobs = jobs
        self.broker_id = settings.broker_id
        self._submitted: dict[str, str] = {}
        self._owners: dict[str, int] = {}
        self._markers_ok = True

    def intent(self, token: str) -> None:
        """A submit with this token is about to be sent: a retry must look before sending."""
        self._write_marker(token, "")

    def record(self, token: str, backend_id: str, owner: int | None = None) -> None:
        """The submit with this token returned this job id, of a job that runs as uid `owner`."""
        self._submitted[token] = backend_id
        if owner is not None:
            self._owners[token] = owner
        self._write_marker(token, backend_id if owner is None else f"{backend_id} {owner}")

    def owner(self, token: str | None, site_user: str) -> int | None:
        """The uid the token's job runs as, from memory or its marker; None when not known.

        A marker an older broker wrote (no uid) stands for the site's user: a tenant user's job
        then reads as lost, never with another user's files.
        """
        if token is None:
            return None
        if token in self._owners:
            return self._owners[token]
        words = self._marker_words(self.output_dir / f"{token}.jobid")
        return int(words[1]) if len(words) > 1 and words[1].isdigit() else uid_of(site_user)

    @staticmethod
    def _marker_words(marker: Path) -> list[str]:
        try:  # a link or a FIFO a job left here reads as no marker (a FIFO would block)
            data = read_file_chunk(marker, 0, MARKER_BYTES)
        except OSError:
            return []
        return (data or b"").decode("ascii", "replace").split()

    def _write_marker(self, token: str, backend_id: str) -> None:
        """``<token>.jobid``: empty = a submit was attempted; else the job id it returned."""
        try:
            marker = self.output_dir / f"{token}.jobid"
            tmp = marker.with_suffix(".jobid.tmp")
            # Jobs can write output_dir: never follow a link one put in the marker's place.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(backend_id)
            os.replace(tmp, marker)
        except OSError:
            self._markers_ok = False  # from now on every first submit asks slurmctld

    def find(self, token: str, user: str | None = None) -> str | None:
        """A job already submitted with this token: memory, marker file, then slurmctld.

        slurmctld (a full job listing) is asked only when the marker says a submit was
        attempted without recording its job id (the broker died or the reply was lost),
        or when markers cannot be written here.
        """
        if token in self._submitted:
            return self._submitted[token]
        marker = self.output_dir / f"{token}.jobid"
        try:
            data = read_file_chunk(marker, 0, MARKER_BYTES)
        except OSError:
            data = b""
        if data is None and self._markers_ok and not os.path.lexists(marker):
            return None  # never attempted from this output_dir
        words = (data or b"").decode("ascii", "replace").split()
        if words:
            self._submitted[token] = words[0]
            return words[0]
        table = self.jobs.read(full=True)  # must not miss a job: no cache
        for job in table.values():
            marks = decode_marks(job.get("comment"))
            if marks.get("token") == token and marks.get("broker") == self.broker_id:
                return self._adopt(token, str(job.get("job_id")), record_owner(job))
        started = self._started_id(token, user)
        if started is None or not _plausible(started[0], token, table):
            return None
        return self._adopt(token, *started)

    def _adopt(self, token: str, backend_id: str, owner: int | None) -> str:
        """A job found for `token` without its marker: the marker is written now, so that once
        slurmctld forgets the job its status still finds the token (`token_of`)."""
        self.record(token, backend_id, None if owner == NOBODY else owner)
        return backend_id

    def _started_id(self, token: str, user: str | None) -> tuple[str, int] | None:
        """The job id the batch script wrote for `token`, if the job's user wrote it: jobs can
        write this folder, and another tenant's job could name a job of its own (or a future id)
        for an attempt whose reply was lost, to have the broker follow and cancel it."""
        started = started_file(self.settings, token)
        try:
            writer, data = os.lstat(started), read_file_chunk(started, 0, MARKER_BYTES)
            text = (data or b"").decode("ascii", "replace").strip()
            # the script made the job's own .out as the job's user
            output = os.lstat(output_file(self.settings, token, text)) if text.isdigit() else None
        except OSError:
            return None
        if output is None or not (stat.S_ISREG(writer.st_mode) and stat.S_ISREG(output.st_mode)):
            return None
        expected = None if user is None else uid_of(user)  # (a user this host does not know: unsaid)
        if writer.st_uid != output.st_uid or expected not in (None, writer.st_uid):
            return None
        return text, writer.st_uid

    def token_of(self, backend_id: str) -> str | None:
        """The token a job was submitted with, from memory or the marker files."""
        for token, known in self._submitted.items():
            if known == backend_id:
                return token
        try:
            markers = list(self.output_dir.glob("*.jobid"))
        except OSError:
            return None
        for marker in markers:
            if self._marker_words(marker)[:1] == [backend_id]:
                return marker.name[: -len(".jobid")]
        return None


def _plausible(started: str, token: str, table: Mapping[str, Mapping[str, Any]]) -> bool:
    """A job id slurmctld lists under another token is not this token's, nor one above every id
    it lists (not issued yet: another job would take it)."""
    listed = table.get(started)
    if listed is not None:
        return decode_marks(listed.get("comment")).get("token") == token
    ids = [int(k) for k in table if str(k).isdigit()]
    return not ids or int(started) <= max(ids)
