"""Which Slurm record is an attempt's, and the result of an attempt whose job slurmctld no longer has.

A job id names the attempt's job only while slurmctld keeps it. It purges an ended job after
MinJobAge, and slurmctld killed before it saved a job issues that job's id again after its
restart: to the broker's next job, or to another user's. A record is the attempt's only when its
marks (the job comment) name this broker and the attempt's token; otherwise the attempt's job is
gone, and its files (`<token>.<key>.<job id>.rc`, `.out`: `_script.file_stem`) say how it ended,
when the job's own user wrote them (`adapters.slurm._owned`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.base import NotFoundError, written_by
from adapters.slurm._owned import NOBODY, foreign
from adapters.slurm._records import decode_marks, log_tail
from adapters.slurm._script import ScriptSettings, exit_code_file, output_file, read_exit_code
from broker.model import AttemptState, AttemptStatus


def own_job(job: Mapping[str, Any], broker_id: str, token: str | None = None) -> bool:
    """The record carries this broker's marks (and `token`'s, when given)."""
    marks = decode_marks(job.get("comment"))
    return marks.get("broker") == broker_id and (token is None or marks.get("token") == token)


def files_status(
    settings: ScriptSettings, site: str, backend_id: str, token: str | None, owner: int | None
) -> AttemptStatus:
    """A job slurmctld no longer has for `token`: its recorded exit code; else, when it started,
    FAILED with no code (it ran: never run again); else NotFoundError (it never ran). Only the
    files of `owner` (the uid the job ran as; None: not known) count; with another's there, LOST."""
    uid = NOBODY if owner is None else owner
    files = _own_files(settings, token, backend_id) if token else []
    if token and not any(os.path.lexists(f) for f in files):
        settings = replace(settings, file_key=None)  # an attempt an older broker ran: `<token>.rc`
        files = _own_files(settings, token, backend_id)
    code = read_exit_code(settings, token, backend_id, uid) if token else None
    unrecorded = None
    if token is not None and code is None:
        unrecorded = ended_unrecorded(files[1], uid)
    planted = foreign(files, uid)
    if unrecorded is not None and planted:
        note = f"; ignored, not the job's user's ({_expected(owner)}): {', '.join(planted)}"
        unrecorded = unrecorded.model_copy(update={"message": unrecorded.message + note})
    if token is not None and code is None and unrecorded is None and planted:
        why = (f"slurmctld no longer lists the job, and its files are not its user's "
               f"({_expected(owner)}), so they are not believed: {', '.join(planted)}")
        return AttemptStatus(state=AttemptState.LOST, message=why, cause=why)
    if token is None or (code is None and unrecorded is None):
        raise NotFoundError(site, "NoSuchJob", f"slurm job {backend_id} is not known (any more)")
    if unrecorded is not None:
        return unrecorded
    tail = log_tail(files[1], uid)
    state = AttemptState.SUCCEEDED if code == 0 else AttemptState.FAILED
    return AttemptStatus(state=state, exit_code=code, log_tail=tail,
                         message=f"{'COMPLETED' if code == 0 else 'FAILED'} (from the recorded "
                         "exit code; slurmctld no longer lists the job)")


def _own_files(settings: ScriptSettings, token: str, backend_id: str) -> list[Path]:
    """Job `backend_id`'s exit code and output files (not another job's of the same token)."""
    return [exit_code_file(settings, token, backend_id), output_file(settings, token, backend_id)]


def _expected(owner: int | None) -> str:
    return "the broker does not know which user it ran as" if owner is None else f"uid {owner}"


def ended_unrecorded(output: Path, owner: int) -> AttemptStatus | None:
    """A purged job that left no exit code. Slurm writes its output file when it starts the job:
    with one (of `owner`'s), the job ran and ended while nobody watched (cancelled there, out of
    time, its shell or node killed), and run again it would run twice: FAILED. Without one
    (None), it never ran."""
    try:
        written = output.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(written.st_mode) or not written_by(written, owner):
        return None
    why = ("slurmctld no longer lists the job and it left no exit code: it started (its output "
           "file exists) and ended while the broker was not watching (cancelled at Slurm, out of "
           "time, or its batch shell or node was killed); it is not run again")
    return AttemptStatus(state=AttemptState.FAILED, log_tail=log_tail(output, owner), message=why,
                         cause=why, stopped_at=datetime.fromtimestamp(written.st_mtime, UTC))
