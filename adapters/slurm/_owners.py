"""Jobs of tenant users: which user a job is submitted as, checked to run as, and stopped as.

A request naming a ``user`` other than the site's (the tenant's ``batch.user``) is submitted
with a token minted for that user (`tenant_user`). Slurm takes such a token even for a user
its nodes do not know and runs the job as nobody, so the job's owner is checked after the
submit (`check_owner`). The site's user may not stop another user's job: a refused stop is
made again as the job's owner when a token can be minted for it (`owner_of`, `delete_job`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from adapters.base import AdapterError, AuthError, RequestError
from adapters.slurm._client import SlurmRest
from adapters.slurm._jobs import JobTable
from adapters.slurm._owned import NOBODY, record_owner, uid_of
from broker.model import LaunchRequest

log = logging.getLogger(__name__)


def tenant_user(request: LaunchRequest, site_user: str) -> str | None:
    """The user to submit `request` as: its own when it names one other than the site's, else None."""
    return request.user if request.user and request.user != site_user else None


def check_owner(rest: SlurmRest, jobs: JobTable, backend_id: str, user: str) -> None:
    """Raise unless the job submitted as `user` runs as it.

    Slurm takes a token for a user its nodes do not know and runs the job as nobody:
    such a job is cancelled and refused, naming the user.
    """
    found = rest.request("GET", f"job/{backend_id}").get("jobs") or []
    owner = str(found[0].get("user_name") or "") if found else user
    if owner == user:
        return
    try:  # with the token it was submitted with: the site's user may not stop it
        rest.request("DELETE", f"job/{backend_id}", as_user=user)
    except AdapterError as exc:
        log.warning("site %s: cannot cancel job %s of user %r: %s", rest.site, backend_id, user, exc)
    jobs.invalidate()
    raise RequestError(rest.site, "UnknownUser",
                       f"Slurm does not know user {user!r} (tenants[].batch.user): it would run the "
                       f"job as {owner or 'nobody'}; create the user on the cluster or change batch.user")


def job_uid(rest: SlurmRest, backend_id: str, user: str) -> int | None:
    """The uid the job submitted as `user` runs as: this host's for the name, else Slurm's record."""
    uid = uid_of(user)
    if uid is not None:
        return uid
    try:
        found = rest.request("GET", f"job/{backend_id}").get("jobs") or []
    except AdapterError:
        return None  # not known: its files are not believed once slurmctld forgets it
    uid = record_owner(found[0]) if found else NOBODY
    return None if uid == NOBODY else uid


def owner_of(rest: SlurmRest, job_id: str, job: Mapping[str, Any] | None = None) -> str | None:
    """The job's user when it is not the site's and a token can be minted for it; else None."""
    if not rest.mints_tokens:
        return None
    if job is None:
        found = rest.request("GET", f"job/{job_id}").get("jobs") or []
        job = found[0] if found else {}
    user = str(job.get("user_name") or "")
    return user if user and user != rest.user else None


def delete_job(rest: SlurmRest, job_id: str) -> None:
    """Cancel the job as the site's user, else (refused) as its owner; errors as slurmrestd's."""
    try:
        rest.request("DELETE", f"job/{job_id}")
    except AuthError:  # the site's user may not stop another user's job: its owner may
        owner = owner_of(rest, job_id)
        if owner is None:
            raise
        rest.request("DELETE", f"job/{job_id}", as_user=owner)
