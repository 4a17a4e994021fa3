"""`SlurmAdapter`: the broker's contract (`adapters.base.Adapter`) over slurmrestd."""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from adapters.base import (
    NO_RUNTIME,
    AdapterError,
    Capability,
    ConfigError,
    NotFoundError,
    UnsupportedError,
    read_file_chunk,
)
from adapters.slurm._client import SlurmRest, checked_job_id
from adapters.slurm._config import parse_partitions, partition_for
from adapters.slurm._filekey import FileKey, ready_output_dir
from adapters.slurm._gone import files_status, own_job
from adapters.slurm._jobs import JobTable
from adapters.slurm._ledger import TokenLedger
from adapters.slurm._offers import PartitionReads
from adapters.slurm._owned import record_owner
from adapters.slurm._owners import check_owner, delete_job, job_uid, owner_of, tenant_user
from adapters.slurm._queued import submitted_job_id
from adapters.slurm._records import (
    SLURM_STATES,
    decode_marks,
    job_state_name,
    job_status,
    output_path,
)
from adapters.slurm._refusals import job_refusal
from adapters.slurm._script import (
    ScriptSettings,
    job_output,
    launch_hint,
    name_failed_rank,
    output_file,
    submit_body,
)
from adapters.slurm._stop import grace_update, stopping
from broker.model import (
    AttemptId,
    AttemptState,
    AttemptStatus,
    CapacitySnapshot,
    JobId,
    LaunchRequest,
    Offer,
    OwnedInstance,
    SiteId,
)

DEFAULT_BROKER_ID = "shangzhuang"
log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class SlurmAdapter:
    """Slurm through slurmrestd.

    Config keys: ``url`` (slurmrestd base URL, required unless the injected client has a
    base_url), ``user`` (X-SLURM-USER-NAME, the account jobs run as; required, never
    defaulted to ``root``), ``token`` (a JWT; when absent,
    ``scontrol token username=<user> lifespan=<token_lifespan_s>`` is run, with ``slurm_conf``
    as SLURM_CONF if given), ``partitions`` (required; the policy's list or a mapping, see
    `adapters.slurm._config`), ``gres_types`` (``{partition or accelerator: gres type}``),
    ``cpu_partition`` (for jobs without accelerators; default: the first CPU partition, else
    the offer's), ``output_dir`` (shared directory for job output; default
    ``$TMPDIR/szb-slurm-output``), ``workdir`` (job cwd; default output_dir),
    ``container_runtime`` (e.g. ``apptainer exec``; without it images are unsupported),
    ``environment`` (extra env for every job; PATH defaults to a standard one),
    ``price_per_accelerator_hour``, ``price_per_cpu_hour``, ``currency`` (CNY),
    ``time_limit_factor`` (time limit = runtime estimate x factor, default 1.5),
    ``min_time_limit_minutes`` (default 1), ``unlimited_job_hours`` (24), ``broker_id``
    (``shangzhuang``; one per broker sharing a cluster: reconciliation cancels jobs marked
    with it that the broker does not know), ``api_version`` (pin one of
    `SUPPORTED_API_VERSIONS`), ``timeout_s`` (HTTP timeout, default 10), ``token_lifespan_s``
    (3600), ``jobs_cache_s`` (how long one ``GET jobs`` is shared by capacity/status/list_owned,
    default 1; 0 disables), ``jobs_full_read_s`` (an unconditional ``GET jobs`` at least this
    often, default 30; in between, ``?update_time=`` asks whether anything changed) and
    ``jobs_clock_margin_s`` (how far slurmctld's clock may lag this host's, default 2); see
    `adapters.slurm._jobs`.

    A request naming a ``user`` (the tenant's ``batch.user``) is submitted with a token minted
    for that user and stopped as it when the site's user may not; its files are private to it.

    ``client``: an httpx.Client to use instead of building one (tests, custom TLS).
    """

    def __init__(
        self,
        site: SiteId,
        config: Mapping[str, Any],
        *,
        client: httpx.Client | None = None,
    ) -> None:
        self.site = site
        url = config.get("url") or (str(client.base_url) if client and str(client.base_url) else "")
        if not url:
            raise ConfigError(site, "MissingUrl", "slurm adapter needs url (the slurmrestd address)")
        self.partitions = parse_partitions(site, config)
        user = str(config.get("user") or "").strip()
        if not user:
            raise ConfigError(site, "MissingUser",
                              "slurm adapter needs user: the Slurm account jobs run as "
                              "(X-SLURM-USER-NAME); it is never defaulted to root")
        if user == "root":
            log.warning("site %s: Slurm jobs run as root (user: root); use an unprivileged one", site)
        self.rest = SlurmRest(
            site, str(url), user=user, token_file=config.get("token_from_file"),
            token=str(config["token"]) if config.get("token") else None,
            token_lifespan_s=int(config.get("token_lifespan_s", 3600)),
            slurm_conf=str(config["slurm_conf"]) if config.get("slurm_conf") else None,
            api_version=config.get("api_version"), timeout_s=float(config.get("timeout_s", 10.0)),
            client=client,
        )
        cpu_parts = [p.name for p in self.partitions.values() if p.accelerator is None]
        self.cpu_partition: str | None = config.get("cpu_partition") or (cpu_parts[0] if cpu_parts else None)
        output_dir = Path(config.get("output_dir") or
                          Path(os.environ.get("TMPDIR", "/tmp")) / "szb-slurm-output")
        runtime = config.get("container_runtime")
        self.settings = ScriptSettings(
            broker_id=str(config.get("broker_id", DEFAULT_BROKER_ID)),
            output_dir=output_dir,
            workdir=str(config.get("workdir") or output_dir),
            container_runtime=tuple(shlex.split(runtime) if isinstance(runtime, str)
                                    else [str(x) for x in runtime or []]),
            environment={str(k): str(v) for k, v in dict(config.get("environment") or {}).items()},
            time_limit_factor=float(config.get("time_limit_factor", 1.5)),
            min_time_limit_min=int(config.get("min_time_limit_minutes", 1)),
            file_key=FileKey(site, output_dir),
        )
        self._submit_lock = threading.Lock()
        self.jobs = JobTable(self.rest, cache_s=float(config.get("jobs_cache_s", 1.0)),
                             full_read_s=float(config.get("jobs_full_read_s", 30.0)),
                             clock_margin_s=float(config.get("jobs_clock_margin_s", 2.0)))
        self.reads = PartitionReads(
            site, self.rest, self.jobs, self.partitions, broker_id=self.settings.broker_id,
            cpu_price=float(config.get("price_per_cpu_hour", 0.0)),
            currency=str(config.get("currency", "CNY")),
            unlimited_s=float(config.get("unlimited_job_hours", 24)) * 3600,
        )
        self.ledger = TokenLedger(self.settings, self.jobs)

    # Settings and health, as attributes ---------------------------------------------------

    @property
    def url(self) -> str:
        return self.rest.url

    @property
    def user(self) -> str:
        return self.rest.user

    @property
    def broker_id(self) -> str:
        return self.settings.broker_id

    @property
    def output_dir(self) -> Path:
        return self.settings.output_dir

    @property
    def container_runtime(self) -> Sequence[str]:
        return self.settings.container_runtime

    @property
    def healthy(self) -> bool:
        """False after a transport failure or a transient Slurm error, until a call succeeds."""
        return self.rest.healthy

    @property
    def last_error(self) -> str:
        return self.rest.last_error

    @property
    def api_version(self) -> str:
        """The slurmrestd API version in use (detected on first call)."""
        return self.rest.version()

    # Capability, capacity and offers -------------------------------------------------------

    def unsupported(self) -> Mapping[Capability, str]:
        missing = {
            Capability.SPOT: "Slurm partitions are not preemptible spot capacity",
            Capability.LIVE_PRICES: "on-prem capacity is charged at its configured shadow price",
            Capability.STOCK: "Slurm reports free capacity and expected wait, not zone stock",
        }
        if not self.container_runtime:
            missing[Capability.CONTAINER_IMAGES] = NO_RUNTIME
        return missing

    def ping(self) -> None:
        """Raise unless slurmrestd and slurmctld answer (also refreshes ``healthy``)."""
        self.rest.request("GET", "ping")

    def capacity(self, now: datetime) -> CapacitySnapshot:
        return self.reads.capacity(now)

    def expected_wait_s(self, partition: str, count: int, now: datetime) -> float | None:
        """Estimated seconds before a job needing `count` units starts in `partition`.

        Reuses the read of the last `capacity`/`offers` call made with the same `now`.
        """
        return self.reads.expected_wait_s(partition, count, now)

    def offers(self, now: datetime) -> Sequence[Offer]:
        return self.reads.offers(now)

    # Lifecycle ---------------------------------------------------------------------------

    def submit(self, request: LaunchRequest) -> str:
        token = request.token
        if not _TOKEN_RE.fullmatch(token) or token.startswith("."):
            raise ConfigError(self.site, "BadToken",
                              "idempotency token must be 1-128 chars of [A-Za-z0-9_.-]")
        part = partition_for(
            self.site, self.partitions, self.cpu_partition, bool(self.container_runtime), request
        )
        with self._submit_lock:
            existing = self.ledger.find(token, tenant_user(request, self.user) or self.user)
            if existing is not None:
                return existing
            ready_output_dir(self.site, self.output_dir, self.user)
            as_user = tenant_user(request, self.user)  # None: the site's user, also when named
            gtype = self.reads.gres_type_for_submit(part) if request.spec.accelerator_count else None
            body = submit_body(request, part, self.settings, api_version=self.rest.version(),
                               gres_type=gtype, as_tenant_user=as_user is not None)
            self.ledger.intent(token)
            try:
                reply = self.rest.request("POST", "job/submit", payload=body, as_user=as_user,
                                          queued_ok=True)
                backend_id = submitted_job_id(self.rest, reply)
            except UnsupportedError as exc:  # the job too big for every node: its own refusal
                refusal = job_refusal(exc, part.name, self.rest, body["job"])
                if refusal is None:
                    raise
                raise refusal from exc
            finally:
                self.jobs.invalidate()  # even a failed reply may have queued a job
            self.ledger.record(token, backend_id, job_uid(self.rest, backend_id, as_user or self.user))
        if as_user is not None:
            check_owner(self.rest, self.jobs, backend_id, as_user)
        return backend_id

    def status(self, backend_id: str) -> AttemptStatus:
        """The job's status; NotFoundError for a job without this broker's marks (another user's)."""
        job = self._record(checked_job_id(self.site, backend_id))
        if job is None:  # purged (MinJobAge): the files of the token that has this id say
            tok = self.ledger.token_of(backend_id)
            return files_status(self.settings, self.site, backend_id, tok, self.ledger.owner(tok, self.user))
        if not own_job(job, self.broker_id):
            raise NotFoundError(self.site, "NotOurs", f"slurm job {backend_id} is not this broker's")
        return self._job_status(job)

    def status_of(self, backend_id: str, token: str) -> AttemptStatus:
        """The status of the attempt with `token` (`adapters.base.TokenStatus`): from the job's
        record when its marks name this broker and `token`; else, its own job gone (purged, or its
        id reissued after slurmctld lost it), from the files `token` names."""
        job = self._record(checked_job_id(self.site, backend_id))
        if job is not None and own_job(job, self.broker_id, token):
            return self._job_status(job)
        if job is not None:
            log.info("site %s: slurm job %s is not the attempt with token %s (its marks: %r); "
                     "the attempt's job is gone", self.site, backend_id, token, job.get("comment"))
        return files_status(self.settings, self.site, backend_id, token, self.ledger.owner(token, self.user))

    def _record(self, job_id: str) -> Mapping[str, Any] | None:
        """The job's slurmrestd record; None when slurmctld has none."""
        # The table read within the window (by capacity() of this pass, say) answers for free;
        # otherwise one job's record (~4 KB, a few ms) instead of refreshing the whole table.
        table = self.jobs.fresh()
        job = table.get(job_id) if table is not None else None
        if job is not None:
            self.jobs.stats.cache_hits += 1
            return job
        try:
            jobs = self.rest.request("GET", f"job/{job_id}").get("jobs") or []
        except NotFoundError:
            jobs = []
        return jobs[0] if jobs else None

    def _job_status(self, job: Mapping[str, Any]) -> AttemptStatus:
        hint = launch_hint(self.settings, str(job.get("user_name") or self.user))
        owner = record_owner(job)  # its files are believed only when its user wrote them
        status = job_status(job, hint, owner, job_output(self.settings, job))
        return name_failed_rank(status, self.settings, job, owner)

    def read_log(self, backend_id: str, token: str, offset: int, limit: int) -> bytes:
        """The job's own output file (`output_file`), else its Slurm StdOut; only its user's (`_owned`)."""
        owner, data = self.ledger.owner(token, self.user), None
        job_id = checked_job_id(self.site, backend_id)
        if owner is not None:  # (its own job's: a second job of the attempt has files of its own)
            data = read_file_chunk(output_file(self.settings, token, job_id), offset, limit, owner)
        if data is not None:
            return data
        try:
            jobs = self.rest.request("GET", f"job/{job_id}").get("jobs") or []
        except NotFoundError:
            jobs = []
        job = jobs[0] if jobs and own_job(jobs[0], self.broker_id, token) else None  # (not another's)
        path = output_path(job) if job else None
        data = read_file_chunk(path, offset, limit, record_owner(job)) if job and path else None
        if data is None:
            if job and SLURM_STATES.get(job_state_name(job)) is AttemptState.PENDING:
                return b""  # not started yet: no output file
            raise NotFoundError(self.site, "NoOutput", f"no output file for slurm job {backend_id}")
        return data

    def cancel(self, backend_id: str, token: str) -> None:
        """Cancel the attempt's job; a job under its id that is not the attempt's is left alone."""
        job_id = checked_job_id(self.site, backend_id)
        try:
            if self._own_record(job_id, token) is not None:
                delete_job(self.rest, job_id)  # as the job's owner when the site's user may not
        except NotFoundError:
            return  # gone already (purged after MinJobAge): nothing to stop
        except AdapterError as exc:
            if exc.code == "ESLURM_ALREADY_DONE":
                return
            raise
        finally:
            self.jobs.invalidate()  # the next read must see the cancellation

    def preempt(self, backend_id: str, token: str, grace_s: float) -> None:
        """Stop a running job for fair-share reclaim, leaving it `grace_s` to go on first.

        Its time limit becomes its run time + the grace, in whole minutes rounded up (see
        `adapters.slurm._stop`): Slurm sends SIGTERM at that limit and SIGKILL after KillWait.
        A job not started yet, a grace of 0, or an update Slurm refuses: cancelled at once.
        """
        job_id = checked_job_id(self.site, backend_id)
        try:
            job = self._own_record(job_id, token)
            if job is None:
                return  # gone already, or not the attempt's
            update = grace_update(job, time.time(), grace_s) if grace_s > 0 else None
            if update is not None:
                owner = owner_of(self.rest, job_id, job)
                self.rest.request("POST", f"job/{job_id}", payload=update, as_user=owner)
                self.jobs.invalidate()
                log.info("site %s: job %s stops at a time limit of %d min (a %.0f s grace)",
                         self.site, job_id, update["time_limit"], grace_s)
                return
        except NotFoundError:
            return  # gone already
        except AdapterError as exc:  # refused (an older slurmctld, a limit a user may not set)
            log.warning("site %s: no graceful stop for job %s (%s): cancelling it", self.site, job_id, exc)
        self.cancel(backend_id, token)

    def _own_record(self, job_id: str, token: str) -> Mapping[str, Any] | None:
        """The job's record read now when it is the attempt's with `token`; None when slurmctld has
        none, or it is another's (the id reissued after slurmctld lost the attempt's job)."""
        jobs = self.rest.request("GET", f"job/{job_id}").get("jobs") or []
        if jobs and not own_job(jobs[0], self.broker_id, token):
            log.warning("site %s: slurm job %s is not the attempt with token %s (its marks: %r): "
                        "left alone", self.site, job_id, token, jobs[0].get("comment"))
            return None
        return jobs[0] if jobs else None

    def list_owned(self) -> Sequence[OwnedInstance]:
        owned = []
        # Not from the window: another process (a second broker, a test) may have just submitted.
        # Rare (reconciliation), so it always asks; when nothing changed the answer is a cheap 304.
        now_s = time.time()
        for job in self.jobs.read(max_age_s=0).values():
            marks = decode_marks(job.get("comment"))
            if marks.get("broker") != self.broker_id or stopping(marks, now_s):
                continue  # another broker's, or ending at its cut time limit (preempt)
            owned.append(OwnedInstance(
                site=self.site,
                backend_id=str(job.get("job_id")),
                token=marks.get("token"),
                job_id=JobId(marks["job"]) if marks.get("job") else None,
                attempt_id=AttemptId(marks["attempt"]) if marks.get("attempt") else None,
                state=SLURM_STATES.get(job_state_name(job), AttemptState.PENDING),
            ))
        return owned

    def close(self) -> None:
        self.rest.close()

