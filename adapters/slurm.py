"""On-prem Slurm clusters through slurmrestd (JWT auth), one partition per accelerator model.

Wiring
------
Each configured partition maps to one accelerator model and the Slurm gres type that counts
it (``partitions: {a800: A800, ascend: {accelerator: Ascend910B, gres_type: ascend910b}}``).
An attempt becomes one batch job: ``--partition``, ``--gres=gpu:<type>:<n>``, cpus, memory,
a time limit derived from the runtime estimate, the spec's env, the working directory, and
stdout+stderr in ``<output_dir>/<token>.out`` (the cluster's shared filesystem: the broker
reads the log tail from there). A container image runs through the configured
``container_runtime`` prefix (``apptainer exec IMAGE argv…``); a plain command runs as the
shell-quoted argv. The job's name (``szb.<job>.<attempt>``) and comment
(``szb:broker=…;szb:job=…;szb:attempt=…;szb:token=…``) carry the broker's marks:
``list_owned`` filters on them and ``submit`` looks the token up before submitting (plus a
``<output_dir>/<token>.jobid`` marker that outlives slurmctld's MinJobAge purge), so a retried
submit returns the first job instead of starting a second one.

The REST API version is detected on first use from the paths slurmrestd serves
(``/openapi/v3``), newest first from `SUPPORTED_API_VERSIONS`; v0.0.38 (Slurm 22.05) is the
one tested against real daemons, the newer ones differ only in the places marked
"version-specific" (environment as a list, structured numbers, state lists, exit codes).

Expected wait model (`estimate_wait_s`, pure)
---------------------------------------------
For a new job needing ``count`` accelerators in a partition with ``total`` usable and
``free`` idle ones, given the running jobs there (accelerators, seconds left until their time
limit) and the pending ones (accelerators, time limit, and Slurm's own expected start when the
backfill scheduler has computed one):

1. ``count > total``: it can never start (None). ``count == 0``: no wait (CPUs are not modelled).
2. Pending jobs with a Slurm start estimate are taken as Slurm sees them: the new job, queued
   behind them (FIFO, no backfill credit), cannot start before the last of them starts, ``S``.
   At ``S`` the running jobs still going and the pending ones started by then (until start +
   time limit) become the "running" set, and the estimate continues from ``S`` with the
   remaining (unestimated) pending jobs: ``wait = S + estimate(at S)``.
3. No pending jobs: ``0`` if ``free >= count``, else the moment enough running jobs have
   reached their time limit that ``count`` accelerators are free (exact for time limits).
4. Pending jobs without Slurm estimates: the backlog of accelerator-seconds ahead of the job,
   ``sum(running gpus x seconds left) + sum(pending gpus x time limit)``, spread over the
   partition's ``total`` accelerators (a fluid approximation), but never less than step 3's
   release time.

Time limits over-estimate real run times, so the estimate is an upper-leaning guess; Slurm's
estimates (step 2) use the same limits. Jobs with no time limit count as
``unlimited_job_hours`` (default 24).

Errors
------
Transport failures and timeouts are `TransientError` and mark the adapter unhealthy
(``healthy`` / ``last_error``); HTTP 401/403 is `AuthError`; Slurm error codes in a reply's
``errors`` list go through the one table `SLURM_ERRORS`. slurmrestd 22.05 reports a rejected
or expired JWT and an unreachable slurmctld alike as error -1 with HTTP 500: a token the
adapter fetched itself is refreshed once and the call retried, a token past its ``exp`` claim
is `AuthError`, otherwise -1 is `TransientError`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

import httpx

from adapters.base import (
    AdapterError,
    AuthError,
    Capability,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    TransientError,
    UnsupportedError,
)
from broker.model import (
    AttemptId,
    AttemptState,
    AttemptStatus,
    CapacitySnapshot,
    JobId,
    LaunchRequest,
    Offer,
    OwnedInstance,
    PartitionCapacity,
    SiteId,
)

SUPPORTED_API_VERSIONS: tuple[str, ...] = ("v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38")
"""slurmrestd openapi plugin versions this adapter speaks, newest first (the one place)."""

LOG_TAIL_BYTES = 4096
DEFAULT_BROKER_ID = "shangzhuang"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MARK_PREFIX = "szb:"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_NO_VAL_32 = 0xFFFFFFFE  # Slurm's NO_VAL; INFINITE is 0xFFFFFFFF; 64-bit variants are larger

# ------------------------------------------------------------------------------------ errors

SLURM_ERRORS: Mapping[int, tuple[str, type[AdapterError]]] = {
    # code: (Slurm's name, what dispatch should do). Codes absent here become AdapterError.
    -1: ("SLURM_ERROR", TransientError),  # 22.05: bad/expired JWT *or* slurmctld unreachable
    1000: ("SLURM_UNEXPECTED_MSG_ERROR", TransientError),
    1001: ("SLURM_COMMUNICATIONS_CONNECTION_ERROR", TransientError),
    1002: ("SLURM_COMMUNICATIONS_SEND_ERROR", TransientError),
    1003: ("SLURM_COMMUNICATIONS_RECEIVE_ERROR", TransientError),
    1004: ("SLURM_COMMUNICATIONS_SHUTDOWN_ERROR", TransientError),
    1005: ("SLURM_PROTOCOL_VERSION_ERROR", ConfigError),
    1007: ("SLURM_PROTOCOL_AUTHENTICATION_ERROR", AuthError),
    1800: ("SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR", TransientError),
    1801: ("SLURMCTLD_COMMUNICATIONS_SEND_ERROR", TransientError),
    1802: ("SLURMCTLD_COMMUNICATIONS_RECEIVE_ERROR", TransientError),
    1803: ("SLURMCTLD_COMMUNICATIONS_SHUTDOWN_ERROR", TransientError),
    2000: ("ESLURM_INVALID_PARTITION_NAME", ConfigError),
    2001: ("ESLURM_DEFAULT_PARTITION_NOT_SET", ConfigError),
    2002: ("ESLURM_ACCESS_DENIED", AuthError),
    2003: ("ESLURM_JOB_MISSING_REQUIRED_PARTITION_GROUP", AuthError),
    2005: ("ESLURM_TOO_MANY_REQUESTED_CPUS", UnsupportedError),
    2006: ("ESLURM_INVALID_NODE_COUNT", UnsupportedError),
    2007: ("ESLURM_ERROR_ON_DESC_TO_RECORD_COPY", TransientError),
    2010: ("ESLURM_USER_ID_MISSING", AuthError),
    2014: ("ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE", UnsupportedError),
    2015: ("ESLURM_REQUESTED_PART_CONFIG_UNAVAILABLE", UnsupportedError),
    2016: ("ESLURM_NODES_BUSY", CapacityError),
    2017: ("ESLURM_INVALID_JOB_ID", NotFoundError),
    2019: ("ESLURM_WRITING_TO_FILE", TransientError),
    2020: ("ESLURM_TRANSITION_STATE_NO_UPDATE", TransientError),
    2021: ("ESLURM_ALREADY_DONE", AdapterError),  # cancel treats it as done; elsewhere: report
    2027: ("ESLURM_IN_STANDBY_MODE", TransientError),
    2035: ("ESLURM_FRAGMENTATION", CapacityError),
    2036: ("ESLURM_NOT_SUPPORTED", UnsupportedError),
    2037: ("ESLURM_DISABLED", UnsupportedError),
    2044: ("ESLURM_INVALID_TASK_MEMORY", UnsupportedError),
    2045: ("ESLURM_INVALID_ACCOUNT", ConfigError),
    2050: ("ESLURM_ACCOUNTING_POLICY", QuotaError),
    2051: ("ESLURM_INVALID_TIME_LIMIT", UnsupportedError),
    2052: ("ESLURM_RESERVATION_ACCESS", AuthError),
    2066: ("ESLURM_INVALID_QOS", ConfigError),
    2068: ("ESLURM_NODE_NOT_AVAIL", CapacityError),
    2069: ("ESLURM_INVALID_CPU_COUNT", UnsupportedError),
    2070: ("ESLURM_PARTITION_NOT_AVAIL", CapacityError),
    2072: ("ESLURM_INVALID_GRES", ConfigError),
    2074: ("ESLURM_QOS_THRES", QuotaError),
    2090: ("ESLURM_INTERNAL", TransientError),
    2101: ("ESLURM_PARTITION_DOWN", CapacityError),
    2102: ("ESLURM_DUPLICATE_GRES", ConfigError),
    2105: ("ESLURM_SUBMISSIONS_DISABLED", TransientError),
    2115: ("ESLURM_INVALID_TRES", ConfigError),
    2118: ("ESLURM_MAINTENANCE_RESERVATION", CapacityError),
    2119: ("ESLURM_INVALID_GRES_TYPE", ConfigError),
    2127: ("ESLURM_ENVIRONMENT_MISSING", ConfigError),
    2131: ("ESLURM_IN_STANDBY_USE_BACKUP", TransientError),
    2134: ("ESLURM_INSUFFICIENT_GRES", CapacityError),
    5004: ("SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT", TransientError),
    6000: ("ESLURM_AUTH_CRED_INVALID", AuthError),
    6006: ("ESLURM_AUTH_BADARG", AuthError),
    8000: ("ESLURM_MISSING_TIME_LIMIT", ConfigError),
    9000: ("ESLURM_REST_INVALID_QUERY", ConfigError),
    9001: ("ESLURM_REST_FAIL_PARSING", ConfigError),
    9002: ("ESLURM_REST_INVALID_JOBS_DESC", ConfigError),
    9003: ("ESLURM_REST_EMPTY_RESULT", NotFoundError),
}


def error_for(site: str, code: int, message: str) -> AdapterError:
    """The AdapterError for a Slurm error code (via `SLURM_ERRORS`); `code` keeps the name."""
    name, cls = SLURM_ERRORS.get(code, (f"SLURM_{code}", AdapterError))
    return cls(site, name, f"{message} (slurm error {code})")


# ------------------------------------------------------------------------------------ states

SLURM_STATES: Mapping[str, AttemptState] = {
    "PENDING": AttemptState.PENDING,
    "CONFIGURING": AttemptState.PENDING,  # allocated, nodes booting
    "REQUEUED": AttemptState.PENDING,
    "REQUEUE_FED": AttemptState.PENDING,
    "REQUEUE_HOLD": AttemptState.PENDING,
    "RESV_DEL_HOLD": AttemptState.PENDING,
    "SUSPENDED": AttemptState.PENDING,  # holds its allocation but makes no progress
    "RUNNING": AttemptState.RUNNING,
    "COMPLETING": AttemptState.RUNNING,  # epilog still running; the final state follows
    "RESIZING": AttemptState.RUNNING,
    "SIGNALING": AttemptState.RUNNING,
    "STAGE_OUT": AttemptState.RUNNING,
    "STOPPED": AttemptState.RUNNING,
    "UPDATE_DB": AttemptState.RUNNING,
    "COMPLETED": AttemptState.SUCCEEDED,
    "FAILED": AttemptState.FAILED,
    "TIMEOUT": AttemptState.FAILED,
    "OUT_OF_MEMORY": AttemptState.FAILED,
    "DEADLINE": AttemptState.FAILED,
    "SPECIAL_EXIT": AttemptState.FAILED,
    "CANCELLED": AttemptState.CANCELLED,
    "PREEMPTED": AttemptState.PREEMPTED,
    "NODE_FAIL": AttemptState.LOST,  # the infrastructure failed, not the job
    "BOOT_FAIL": AttemptState.LOST,
    "LAUNCH_FAILED": AttemptState.LOST,
    "REVOKED": AttemptState.LOST,  # federation: the job runs on a sibling cluster
    "POWER_UP_NODE": AttemptState.PENDING,
    "RECONFIG_FAIL": AttemptState.LOST,
}


def job_state_name(job: Mapping[str, Any]) -> str:
    """The base state of a job record (a string in v0.0.38, a list of flags from v0.0.40)."""
    raw = job.get("job_state", job.get("state"))
    if isinstance(raw, list):
        names = [str(x).upper() for x in raw]
        for name in names:
            if name in SLURM_STATES:
                return name
        return names[0] if names else "UNKNOWN"
    if isinstance(raw, Mapping):  # defensive: {"current": [...]} as in slurmdb replies
        return job_state_name({"job_state": raw.get("current")})
    return str(raw or "UNKNOWN").upper()


def slurm_number(value: Any) -> float | None:
    """A Slurm number, plain (v0.0.38) or ``{"set", "infinite", "number"}`` (v0.0.39+).

    None when unset, infinite or NO_VAL.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return None if value >= _NO_VAL_32 else float(value)
    if isinstance(value, Mapping):
        if value.get("infinite") or not value.get("set", True):
            return None
        return slurm_number(value.get("number"))
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        return slurm_number(int(value))
    return None


def decode_exit_code(raw: Any) -> int | None:
    """A shell-style exit code: the wait status of v0.0.38 (signal N -> 128+N) or a v0.0.39+ dict."""
    if isinstance(raw, Mapping):
        status = raw.get("status")
        statuses = {str(s).upper() for s in (status if isinstance(status, list) else [status])}
        signal = raw.get("signal")
        sig = slurm_number(signal.get("id") if isinstance(signal, Mapping) else signal)
        if "SIGNALED" in statuses and sig:
            return 128 + int(sig)
        rc = slurm_number(raw.get("return_code"))
        return int(rc) if rc is not None else None
    n = slurm_number(raw)
    if n is None:
        return None
    status = int(n)
    if status & 0x7F:
        return 128 + (status & 0x7F)
    return (status >> 8) & 0xFF


# ------------------------------------------------------------------------------------ gres

def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: ``gpu:a:2(S:0,1),gpu:b:1`` -> two items."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def parse_gres(text: Any, name: str = "gpu") -> dict[str | None, int]:
    """Counts of one gres by type from a node's ``gres`` / ``gres_used`` or a job's tres string.

    Accepts ``gpu:a800:4``, ``gpu:a800:4(S:0-1)``, ``gpu:a800:0(IDX:N/A)``, ``gpu:4`` (type
    None), ``gres:gpu:a800:4``, ``gres/gpu:a800=4`` and comma lists mixing other resources.
    """
    counts: dict[str | None, int] = {}
    if not isinstance(text, str):
        return counts
    for item in _split_top_level(text):
        item = re.sub(r"\([^()]*\)$", "", item)  # drop "(S:0-1)" / "(IDX:0-3)", keep "(null)"
        for prefix in ("gres:", "gres/"):
            if item.startswith(prefix):
                item = item[len(prefix):]
        parts = re.split(r"[:=]", item)
        if parts[0] != name or len(parts) < 2:
            continue
        if len(parts) == 2:
            gtype, count = None, parts[1]
        else:
            gtype, count = parts[1], parts[2]
        if gtype in ("", "(null)", "null"):
            gtype = None
        if not count.isdigit():
            continue
        counts[gtype] = counts.get(gtype, 0) + int(count)
    return counts


def job_gpus(job: Mapping[str, Any]) -> int:
    """Accelerators a job asks for (any type): per job, else per node x nodes, else per task."""
    per_job = sum(parse_gres(job.get("tres_per_job")).values())
    if per_job:
        return per_job
    per_node = sum(parse_gres(job.get("tres_per_node")).values())
    if per_node:
        nodes = slurm_number(job.get("node_count")) or 1
        return per_node * max(1, int(nodes))
    per_task = sum(parse_gres(job.get("tres_per_task")).values())
    if per_task:
        tasks = slurm_number(job.get("tasks")) or 1
        return per_task * max(1, int(tasks))
    return 0


# ------------------------------------------------------------------------------------ wait model

class RunningWork(NamedTuple):
    gpus: int
    remaining_s: float
    """Seconds until the job's time limit (its latest end)."""


class PendingWork(NamedTuple):
    gpus: int
    limit_s: float
    """Its time limit: how long it may hold the accelerators once started."""
    expected_start_s: float | None = None
    """Slurm's expected start, seconds from now (backfill scheduler), when known."""


def estimate_wait_s(
    total: int,
    free: int,
    count: int,
    running: Sequence[RunningWork],
    pending: Sequence[PendingWork] = (),
) -> float | None:
    """Seconds until a new job needing `count` accelerators can start (see the module docstring).

    None when it can never start (more than `total`).
    """
    if count > total:
        return None
    if count <= 0:
        return 0.0
    known = [p for p in pending if p.expected_start_s is not None]
    unknown = [p for p in pending if p.expected_start_s is None]
    if known:
        start = max(0.0, max(float(p.expected_start_s or 0.0) for p in known))
        active = [RunningWork(r.gpus, r.remaining_s - start) for r in running if r.remaining_s > start]
        for p in known:
            end = max(0.0, float(p.expected_start_s or 0.0)) + p.limit_s
            if end > start:
                active.append(RunningWork(p.gpus, end - start))
        free_then = max(0, total - sum(r.gpus for r in active))
        rest = estimate_wait_s(total, free_then, count, active, unknown)
        return None if rest is None else start + rest
    release = _release_time(total, free, count, running)
    if not unknown:
        return release
    backlog = sum(r.gpus * max(0.0, r.remaining_s) for r in running)
    backlog += sum(p.gpus * max(0.0, p.limit_s) for p in unknown)
    return max(backlog / total, release)


def _release_time(total: int, free: int, count: int, running: Sequence[RunningWork]) -> float:
    """When `count` accelerators are free if running jobs end at their limits (no queue)."""
    if free >= count:
        return 0.0
    available = free
    for job in sorted(running, key=lambda r: r.remaining_s):
        available += job.gpus
        if available >= count:
            return max(0.0, job.remaining_s)
    # The running jobs do not explain the busy accelerators (e.g. a node drained meanwhile):
    # fall back to the fluid backlog.
    return sum(r.gpus * max(0.0, r.remaining_s) for r in running) / max(1, total)


# ------------------------------------------------------------------------------------ marks

def encode_marks(marks: Mapping[str, str]) -> str:
    """``szb:key=value;…`` with values percent-encoded (they may hold any character)."""
    return ";".join(f"{MARK_PREFIX}{k}={quote(v, safe='')}" for k, v in marks.items())


def decode_marks(comment: Any) -> dict[str, str]:
    """The broker's marks from a job comment; {} for comments the broker did not write."""
    marks: dict[str, str] = {}
    if not isinstance(comment, str):
        return marks
    for part in comment.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.startswith(MARK_PREFIX):
            marks[key[len(MARK_PREFIX):]] = unquote(value)
    return marks


# ------------------------------------------------------------------------------------ adapter

@dataclass(frozen=True)
class PartitionConfig:
    name: str
    accelerator: str | None
    gres_type: str | None
    price_per_accelerator_hour: float
    accelerator_memory_gb: float = 0.0


@dataclass(frozen=True)
class _PartitionState:
    """What one capacity read learned about a partition."""

    config: PartitionConfig
    total: int
    free: int
    max_per_node: int
    cpus_per_node: float
    memory_gb_per_node: float
    running: tuple[RunningWork, ...]
    pending: tuple[PendingWork, ...]


class SlurmAdapter:
    """Slurm through slurmrestd.

    Config keys: ``url`` (slurmrestd base URL, required unless the injected client has a
    base_url), ``user`` (X-SLURM-USER-NAME; default ``root``), ``token`` (a JWT; when absent,
    ``scontrol token username=<user> lifespan=<token_lifespan_s>`` is run, with ``slurm_conf``
    as SLURM_CONF if given), ``partitions`` (required: ``{partition: accelerator}`` or
    ``{partition: {accelerator, gres_type, price_per_accelerator_hour,
    accelerator_memory_gb}}``; ``accelerator: null`` marks a CPU partition), ``cpu_partition``
    (for jobs without accelerators; default: the first CPU partition, else the offer's),
    ``output_dir`` (shared directory for job output; default ``$TMPDIR/szb-slurm-output``),
    ``workdir`` (job cwd; default output_dir), ``container_runtime`` (e.g. ``apptainer exec``;
    without it images are unsupported), ``environment`` (extra env for every job; PATH
    defaults to a standard one), ``price_per_accelerator_hour``, ``price_per_cpu_hour``,
    ``currency`` (CNY), ``time_limit_factor`` (time limit = runtime estimate x factor, default
    1.5), ``min_time_limit_minutes`` (default 1), ``unlimited_job_hours`` (24), ``broker_id``
    (``shangzhuang``), ``api_version`` (pin one of `SUPPORTED_API_VERSIONS`), ``timeout_s``
    (HTTP timeout, default 10), ``token_lifespan_s`` (3600).

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
        self.url = str(url).rstrip("/")
        self.user = str(config.get("user", "root"))
        self.timeout_s = float(config.get("timeout_s", 10.0))
        self._client = client or httpx.Client(timeout=self.timeout_s)
        self._configured_token = str(config["token"]) if config.get("token") else None
        self.token_lifespan_s = int(config.get("token_lifespan_s", 3600))
        self.slurm_conf = str(config["slurm_conf"]) if config.get("slurm_conf") else None
        self.partitions = _parse_partitions(site, config)
        cpu_parts = [p.name for p in self.partitions.values() if p.accelerator is None]
        self.cpu_partition: str | None = config.get("cpu_partition") or (cpu_parts[0] if cpu_parts else None)
        self.output_dir = Path(config.get("output_dir") or
                               Path(os.environ.get("TMPDIR", "/tmp")) / "szb-slurm-output")
        self.workdir = str(config.get("workdir") or self.output_dir)
        runtime = config.get("container_runtime")
        self.container_runtime: list[str] = (
            shlex.split(runtime) if isinstance(runtime, str) else [str(x) for x in runtime or []]
        )
        self.environment = {str(k): str(v) for k, v in dict(config.get("environment") or {}).items()}
        self.cpu_price = float(config.get("price_per_cpu_hour", 0.0))
        self.currency = str(config.get("currency", "CNY"))
        self.time_limit_factor = float(config.get("time_limit_factor", 1.5))
        self.min_time_limit_min = int(config.get("min_time_limit_minutes", 1))
        self.unlimited_s = float(config.get("unlimited_job_hours", 24)) * 3600
        self.broker_id = str(config.get("broker_id", DEFAULT_BROKER_ID))
        pinned = config.get("api_version")
        if pinned is not None and pinned not in SUPPORTED_API_VERSIONS:
            raise ConfigError(site, "UnsupportedApiVersion",
                              f"api_version {pinned!r} not in {', '.join(SUPPORTED_API_VERSIONS)}")
        self._api_version: str | None = pinned
        self._token: str | None = self._configured_token
        self._token_expires: float | None = _jwt_expiry(self._token) if self._token else None
        self._token_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._submitted: dict[str, str] = {}
        self._gres_seen: dict[str, str] = {}
        self.healthy = True
        self.last_error = ""

    # Capability, capacity and offers -------------------------------------------------------

    def unsupported(self) -> Mapping[Capability, str]:
        missing = {
            Capability.SPOT: "Slurm partitions are not preemptible spot capacity",
            Capability.LIVE_PRICES: "on-prem capacity is charged at its configured shadow price",
            Capability.STOCK: "Slurm reports free capacity and expected wait, not zone stock",
        }
        if not self.container_runtime:
            missing[Capability.CONTAINER_IMAGES] = "no container_runtime configured for this cluster"
        return missing

    @property
    def api_version(self) -> str:
        """The slurmrestd API version in use (detected on first call)."""
        return self._version()

    def ping(self) -> None:
        """Raise unless slurmrestd and slurmctld answer (also refreshes ``healthy``)."""
        self._request("GET", "ping")

    def capacity(self, now: datetime) -> CapacitySnapshot:
        states = self._read_partitions(now)
        parts = tuple(
            PartitionCapacity(
                name=s.config.name,
                accelerator=s.config.accelerator,
                total=s.total,
                free=s.free,
                queued_jobs=len(s.pending),
                queued_accelerator_hours=sum(p.gpus * p.limit_s for p in s.pending) / 3600,
                running_accelerator_hours_left=sum(r.gpus * max(0.0, r.remaining_s)
                                                   for r in s.running) / 3600,
            )
            for s in states.values()
        )
        return CapacitySnapshot(site=self.site, taken_at=now, partitions=parts)

    def expected_wait_s(self, partition: str, count: int, now: datetime) -> float | None:
        """Estimated seconds before a job needing `count` accelerators starts in `partition`."""
        states = self._read_partitions(now)
        if partition not in states:
            raise ConfigError(self.site, "UnknownPartition", f"partition {partition!r} not configured")
        s = states[partition]
        return estimate_wait_s(s.total, s.free, count, s.running, s.pending)

    def offers(self, now: datetime) -> Sequence[Offer]:
        result = []
        for s in self._read_partitions(now).values():
            accel = s.config.accelerator
            if accel is not None and s.total == 0:
                continue  # no usable nodes carry this partition's accelerators right now
            wait = estimate_wait_s(s.total, s.free, 1 if accel else 0, s.running, s.pending)
            result.append(Offer(
                site=self.site,
                instance_type=s.config.name,
                accelerator=accel,
                count=s.max_per_node if accel else 0,
                price_per_hour=s.config.price_per_accelerator_hour if accel else self.cpu_price,
                currency=self.currency,
                cpus=s.cpus_per_node,
                memory_gb=s.memory_gb_per_node,
                accelerator_memory_gb=s.config.accelerator_memory_gb,
                free=s.free if accel else None,
                expected_wait_s=wait if wait is not None else 0.0,
                price_read_at=now,
            ))
        return result

    def _read_partitions(self, now: datetime) -> dict[str, _PartitionState]:
        """Usable/free units (accelerators; CPUs for CPU partitions) and the queue per partition."""
        nodes = self._request("GET", "nodes").get("nodes") or []
        jobs = self._request("GET", "jobs").get("jobs") or []
        now_s = now.timestamp()
        states: dict[str, _PartitionState] = {}
        for part in self.partitions.values():
            members = [n for n in nodes if part.name in _node_partitions(n)]
            gres_type = self._gres_type(part, members)
            total = free = max_per_node = 0
            cpus = mem = 0.0
            for node in members:
                node_cpus = slurm_number(node.get("cpus")) or 0.0
                cpus = max(cpus, node_cpus)
                mem = max(mem, (slurm_number(node.get("real_memory")) or 0.0) / 1024)
                if part.accelerator is None:
                    count = int(node_cpus)
                    in_use = int(slurm_number(node.get("alloc_cpus")) or 0)
                else:
                    count = parse_gres(node.get("gres")).get(gres_type, 0)
                    in_use = parse_gres(node.get("gres_used")).get(gres_type, 0)
                if not _node_usable(node):
                    continue
                total += count
                free += max(0, count - in_use)
                max_per_node = max(max_per_node, count)
            running: list[RunningWork] = []
            pending: list[PendingWork] = []
            for job in jobs:
                if part.name not in str(job.get("partition") or "").split(","):
                    continue
                name = job_state_name(job)
                state = SLURM_STATES.get(name)
                units = job_gpus(job) if part.accelerator else int(slurm_number(job.get("cpus")) or 1)
                if not units:
                    continue
                if state is AttemptState.RUNNING:
                    end = slurm_number(job.get("end_time"))
                    remaining = (end - now_s) if end else self.unlimited_s
                    running.append(RunningWork(units, max(0.0, min(remaining, self.unlimited_s))))
                elif state is AttemptState.PENDING and name != "SUSPENDED":
                    limit = slurm_number(job.get("time_limit"))
                    limit_s = limit * 60 if limit else self.unlimited_s
                    start = slurm_number(job.get("start_time"))
                    expected = max(0.0, start - now_s) if start else None
                    if expected is not None and expected > 366 * 86400:
                        expected = None  # "never" placeholders
                    pending.append(PendingWork(units, limit_s, expected))
            states[part.name] = _PartitionState(
                part, total, free, max_per_node, cpus, mem, tuple(running), tuple(pending))
        return states

    def _gres_type(self, part: PartitionConfig, members: Sequence[Mapping[str, Any]]) -> str | None:
        """The gres type counting this partition's accelerators: configured, seen, or guessed."""
        if part.accelerator is None:
            return None
        if part.gres_type:
            return part.gres_type
        types = {t for n in members for t in parse_gres(n.get("gres")) if t}
        if len(types) == 1:
            self._gres_seen[part.name] = types.pop()
        return self._gres_seen.get(part.name, part.accelerator.lower())

    def _gres_type_for_submit(self, part: PartitionConfig) -> str | None:
        if part.accelerator is None or part.gres_type:
            return part.gres_type
        if part.name not in self._gres_seen:
            nodes = self._request("GET", "nodes").get("nodes") or []
            return self._gres_type(part, [n for n in nodes if part.name in _node_partitions(n)])
        return self._gres_seen[part.name]

    # Lifecycle ---------------------------------------------------------------------------

    def submit(self, request: LaunchRequest) -> str:
        token = request.token
        if not _TOKEN_RE.fullmatch(token) or token.startswith("."):
            raise ConfigError(self.site, "BadToken",
                              "idempotency token must be 1-128 chars of [A-Za-z0-9_.-]")
        part = self._partition_for(request)
        with self._submit_lock:
            existing = self._find_submitted(token)
            if existing is not None:
                return existing
            body = self._submit_body(request, part)
            reply = self._request("POST", "job/submit", payload=body)
            job_id = reply.get("job_id")
            if job_id is None:
                raise AdapterError(self.site, "NoJobId", f"submit answered without a job id: {reply}")
            backend_id = str(job_id)
            self._submitted[token] = backend_id
            try:
                marker = self.output_dir / f"{token}.jobid"
                tmp = marker.with_suffix(".jobid.tmp")
                tmp.write_text(backend_id)
                os.replace(tmp, marker)
            except OSError:
                pass  # the comment lookup still finds it while slurmctld remembers the job
            return backend_id

    def _partition_for(self, request: LaunchRequest) -> PartitionConfig:
        offer, spec = request.offer, request.spec
        part: PartitionConfig | None = self.partitions.get(offer.instance_type)
        if part is None and offer.accelerator:
            part = next((p for p in self.partitions.values() if p.accelerator == offer.accelerator), None)
        if part is None and spec.accelerator_count == 0:
            name = self.cpu_partition or next(iter(self.partitions))
            part = self.partitions.get(name)
        if part is None:
            raise UnsupportedError(self.site, "NoSuchPartition",
                                   f"no partition here for {offer.instance_type!r} / {offer.accelerator!r}")
        if spec.accelerator_count and part.accelerator is None:
            raise UnsupportedError(self.site, "NoAccelerators",
                                   f"partition {part.name} has no accelerators")
        if spec.image and not self.container_runtime:
            raise UnsupportedError(self.site, "ImagesUnsupported",
                                   "no container_runtime configured for this Slurm cluster")
        return part

    def _find_submitted(self, token: str) -> str | None:
        """A job already submitted with this token: memory, marker file, then slurmctld."""
        if token in self._submitted:
            return self._submitted[token]
        try:
            text = (self.output_dir / f"{token}.jobid").read_text().strip()
        except OSError:
            text = ""
        if text:
            self._submitted[token] = text
            return text
        for job in self._request("GET", "jobs").get("jobs") or []:
            marks = decode_marks(job.get("comment"))
            if marks.get("token") == token and marks.get("broker") == self.broker_id:
                backend_id = str(job.get("job_id"))
                self._submitted[token] = backend_id
                return backend_id
        return None

    def _submit_body(self, request: LaunchRequest, part: PartitionConfig) -> dict[str, Any]:
        spec = request.spec
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(self.site, "OutputDir", f"cannot create {self.output_dir}: {exc}") from exc
        argv = [*self.container_runtime, spec.image, *spec.command] if spec.image else list(spec.command)
        script = (
            "#!/bin/sh\n"
            f"# Shangzhuang broker: job {request.job_id} attempt {request.attempt_id}\n"
            f"exec {shlex.join(argv)}\n"
        )
        env = {"PATH": DEFAULT_PATH, **self.environment, **spec.env,
               "SZB_JOB_ID": str(request.job_id), "SZB_ATTEMPT_ID": str(request.attempt_id)}
        if request.agent_endpoint:
            env["SZB_AGENT_ENDPOINT"] = request.agent_endpoint
        if request.agent_token:
            env["SZB_AGENT_TOKEN"] = request.agent_token
        limit_min = max(self.min_time_limit_min,
                        math.ceil(spec.runtime_estimate.total_seconds() * self.time_limit_factor / 60))
        marks = {"broker": self.broker_id, "job": str(request.job_id),
                 "attempt": str(request.attempt_id), "token": request.token}
        job: dict[str, Any] = {
            "name": f"szb.{request.job_id}.{request.attempt_id}"[:200],
            "comment": encode_marks(marks),
            "partition": part.name,
            "cpus_per_task": max(1, math.ceil(spec.resources.cpus)),
            "memory_per_node": max(1, math.ceil(spec.resources.memory_gb * 1024)),
            "time_limit": limit_min,
            "requeue": False,  # the broker decides about retries, not Slurm
            "current_working_directory": self.workdir,
            "standard_output": str(self.output_dir / f"{request.token}.out"),
        }
        count = spec.accelerator_count
        gres_type = self._gres_type_for_submit(part) if count else None
        # version-specific: environment and gres encoding
        if self._version() == "v0.0.38":
            job["environment"] = env
            if count:
                job["gres"] = f"gpu:{gres_type}:{count}" if gres_type else f"gpu:{count}"
        else:
            job["environment"] = [f"{k}={v}" for k, v in env.items()]
            if count:
                job["tres_per_node"] = f"gres/gpu:{gres_type}:{count}" if gres_type else f"gres/gpu:{count}"
        return {"script": script, "job": job}

    def status(self, backend_id: str) -> AttemptStatus:
        jobs = self._request("GET", f"job/{_job_id(self.site, backend_id)}").get("jobs") or []
        if not jobs:
            raise NotFoundError(self.site, "NoSuchJob", f"slurm job {backend_id} is not known (any more)")
        job = jobs[0]
        name = job_state_name(job)
        state = SLURM_STATES.get(name)
        reason = str(job.get("state_reason") or "")
        tail = _tail(_output_path(job))
        if state is None:
            return AttemptStatus(state=AttemptState.PENDING, log_tail=tail,
                                 message=f"unknown Slurm state {name}")
        message = name if reason in ("", "None") else f"{name} ({reason})"
        if state is AttemptState.PENDING:
            start = slurm_number(job.get("start_time"))
            if start:
                message += f", expected start {datetime.fromtimestamp(start, UTC).isoformat()}"
            return AttemptStatus(state=state, log_tail=tail, message=message)
        if not state.terminal:
            return AttemptStatus(state=state, log_tail=tail, message=message)
        code = decode_exit_code(job.get("exit_code"))
        if state is AttemptState.SUCCEEDED and code is None:
            code = 0
        return AttemptStatus(state=state, exit_code=code, log_tail=tail, message=message)

    def cancel(self, backend_id: str, token: str) -> None:
        try:
            self._request("DELETE", f"job/{_job_id(self.site, backend_id)}")
        except NotFoundError:
            return  # gone already (purged after MinJobAge): nothing to stop
        except AdapterError as exc:
            if exc.code == "ESLURM_ALREADY_DONE":
                return
            raise

    def list_owned(self) -> Sequence[OwnedInstance]:
        owned = []
        for job in self._request("GET", "jobs").get("jobs") or []:
            marks = decode_marks(job.get("comment"))
            if marks.get("broker") != self.broker_id:
                continue
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
        self._client.close()

    # HTTP --------------------------------------------------------------------------------

    def _version(self) -> str:
        if self._api_version is None:
            self._api_version = self._detect_version()
        return self._api_version

    def _detect_version(self) -> str:
        served: set[str] = set()
        try:
            spec = self._request("GET", "/openapi/v3", versioned=False)
            for path in spec.get("paths") or {}:
                m = re.match(r"^/slurm/(v\d+\.\d+\.\d+)/", str(path))
                if m:
                    served.add(m.group(1))
        except ConfigError:
            for version in SUPPORTED_API_VERSIONS:  # no spec served: probe
                try:
                    self._request("GET", f"/slurm/{version}/ping", versioned=False)
                except ConfigError:
                    continue
                return version
        for version in SUPPORTED_API_VERSIONS:
            if version in served:
                return version
        raise ConfigError(self.site, "NoSupportedApiVersion",
                          f"slurmrestd serves {sorted(served) or 'nothing'}; "
                          f"this adapter speaks {', '.join(SUPPORTED_API_VERSIONS)}")

    def _auth_headers(self, refresh: bool = False) -> dict[str, str]:
        with self._token_lock:
            if self._configured_token is None and (
                refresh or self._token is None
                or (self._token_expires is not None and self._token_expires - time.time() < 60)
            ):
                self._token = self._scontrol_token()
                self._token_expires = _jwt_expiry(self._token) or time.time() + self.token_lifespan_s
            token = self._token or ""
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": token}

    def _scontrol_token(self) -> str:
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        cmd = ["scontrol", "token", f"username={self.user}", f"lifespan={self.token_lifespan_s}"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, check=False)
        except FileNotFoundError as exc:
            raise ConfigError(self.site, "NoToken",
                              "no token configured and scontrol is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            self._mark(False, "scontrol token timed out")
            raise TransientError(self.site, "TokenTimeout", "scontrol token timed out") from exc
        m = re.search(r"SLURM_JWT=(\S+)", out.stdout)
        if out.returncode != 0 or not m:
            raise AuthError(self.site, "TokenFailed",
                            f"scontrol token failed: {(out.stderr or out.stdout).strip()[:300]}")
        return m.group(1)

    def _mark(self, healthy: bool, error: str = "") -> None:
        self.healthy = healthy
        self.last_error = error

    def _request(
        self, method: str, path: str, *, payload: Any = None, versioned: bool = True
    ) -> dict[str, Any]:
        url = self.url + (f"/slurm/{self._version()}/{path}" if versioned else path)
        refreshed = False
        while True:
            headers = self._auth_headers(refresh=refreshed)
            try:
                resp = self._client.request(method, url, json=payload, headers=headers,
                                            timeout=self.timeout_s)
            except httpx.TimeoutException as exc:
                self._mark(False, f"timeout: {exc}")
                raise TransientError(self.site, "Timeout", f"{method} {url}: {exc!r}") from exc
            except httpx.TransportError as exc:
                self._mark(False, f"unreachable: {exc}")
                raise TransientError(self.site, "Unreachable", f"{method} {url}: {exc!r}") from exc
            can_refresh = self._configured_token is None and not refreshed
            if resp.status_code in (401, 403):
                if can_refresh:
                    refreshed = True
                    continue
                self._mark(True)
                raise AuthError(self.site, f"HTTP{resp.status_code}",
                                f"slurmrestd refused the token for user {self.user!r}")
            try:
                body = resp.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                if resp.status_code == 404:  # an unknown URL, not an unknown job
                    raise ConfigError(self.site, "NotServed", f"{method} {url}: not served by slurmrestd")
                if resp.status_code >= 500:
                    self._mark(False, f"HTTP {resp.status_code}")
                    raise TransientError(self.site, f"HTTP{resp.status_code}", resp.text[:300])
                raise AdapterError(self.site, "BadReply", f"{method} {url}: HTTP {resp.status_code}: "
                                   f"{resp.text[:300]}")
            errors = [e for e in body.get("errors") or [] if isinstance(e, Mapping)]
            coded = [(_error_code(e), e) for e in errors]
            coded = [(c, e) for c, e in coded if c != 0]
            if coded:
                code, first = coded[0]
                text = str(first.get("description") or first.get("error") or "")
                if code == -1:
                    if can_refresh:
                        refreshed = True
                        continue
                    if self._token_expires is not None and self._token_expires < time.time():
                        self._mark(True)
                        raise AuthError(self.site, "TokenExpired", "the configured Slurm JWT has expired")
                err = error_for(self.site, code, f"{method} {path}: {text}")
                self._mark(not isinstance(err, TransientError), str(err) if isinstance(err, TransientError)
                           else "")
                raise err
            if resp.status_code >= 400:
                if resp.status_code == 404:
                    raise ConfigError(self.site, "NotServed", f"{method} {url}: not served by slurmrestd")
                self._mark(resp.status_code < 500, f"HTTP {resp.status_code}")
                cls = TransientError if resp.status_code >= 500 else AdapterError
                raise cls(self.site, f"HTTP{resp.status_code}", f"{method} {url}: {resp.text[:300]}")
            self._mark(True)
            return body


# ------------------------------------------------------------------------------------ helpers

def _parse_partitions(site: SiteId, config: Mapping[str, Any]) -> dict[str, PartitionConfig]:
    raw = config.get("partitions")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(site, "MissingPartitions",
                          "slurm adapter needs partitions: {partition: accelerator or {accelerator, …}}")
    default_price = float(config.get("price_per_accelerator_hour", 0.0))
    parts: dict[str, PartitionConfig] = {}
    for name, value in raw.items():
        if isinstance(value, Mapping):
            accel = value.get("accelerator")
            parts[str(name)] = PartitionConfig(
                name=str(name),
                accelerator=str(accel) if accel else None,
                gres_type=str(value["gres_type"]) if value.get("gres_type") else None,
                price_per_accelerator_hour=float(value.get("price_per_accelerator_hour", default_price)),
                accelerator_memory_gb=float(value.get("accelerator_memory_gb", 0.0)),
            )
        else:
            parts[str(name)] = PartitionConfig(str(name), str(value) if value else None, None, default_price)
    return parts


def _error_code(error: Mapping[str, Any]) -> int:
    for key in ("error_code", "error_number", "errno"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return -1


def _job_id(site: SiteId, backend_id: str) -> str:
    if not re.fullmatch(r"\d+", backend_id):
        raise NotFoundError(site, "BadJobId", f"{backend_id!r} is not a Slurm job id")
    return backend_id


def _node_partitions(node: Mapping[str, Any]) -> list[str]:
    parts = node.get("partitions")
    if isinstance(parts, list):
        return [str(p) for p in parts]
    if isinstance(parts, str):
        return [p for p in parts.split(",") if p]
    return []


_UNUSABLE_NODE = {"DOWN", "DRAIN", "DRAINED", "DRAINING", "NOT_RESPONDING", "FUTURE", "FAIL",
                  "FAILING", "ERROR", "UNKNOWN", "POWERED_DOWN", "POWER_DOWN", "POWERING_DOWN",
                  "INVALID_REG", "MAINTENANCE", "REBOOT_REQUESTED", "REBOOT_ISSUED"}


def _node_usable(node: Mapping[str, Any]) -> bool:
    """Can new jobs start on this node (not down, drained, unresponsive …)?"""
    raw = node.get("state")
    words = {str(x).upper() for x in raw} if isinstance(raw, list) else {str(raw or "").upper()}
    words |= {str(x).upper() for x in node.get("state_flags") or []}
    return not (words & _UNUSABLE_NODE)


def _output_path(job: Mapping[str, Any]) -> Path | None:
    """The job's stdout file, with the filename patterns this adapter can resolve expanded."""
    raw = job.get("standard_output")
    if not isinstance(raw, str) or not raw:
        return None
    subst = {"j": str(job.get("job_id", "")), "A": str(job.get("array_job_id") or job.get("job_id", "")),
             "x": str(job.get("name", "")), "u": str(job.get("user_name", "")), "%": "%"}
    path = re.sub(r"%(\w|%)", lambda m: subst.get(m.group(1), m.group(0)), raw)
    if not path.startswith("/"):
        path = os.path.join(str(job.get("current_working_directory") or "/"), path)
    return Path(path)


def _tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (no signature check: only to know when to refresh)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    exp = data.get("exp") if isinstance(data, dict) else None
    return float(exp) if isinstance(exp, int | float) else None
