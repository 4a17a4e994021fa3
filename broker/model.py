"""Domain types shared by the core, the store, the adapters and the gRPC edge.

Values are frozen pydantic models so they validate on the way in (a job spec from YAML or
from the wire) and cannot be mutated on the way through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NewType

from pydantic import BaseModel, ConfigDict, Field, field_validator

from broker.durations import Duration, whole_seconds
from broker.imageref import check_image

JobId = NewType("JobId", str)
TenantId = NewType("TenantId", str)
SiteId = NewType("SiteId", str)
AttemptId = NewType("AttemptId", str)


class JobState(StrEnum):
    """Lifecycle of a job; legal moves live in `broker.states`."""

    QUEUED = "QUEUED"
    PLACING = "PLACING"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class SpotMode(StrEnum):
    NEVER = "never"
    ALLOWED = "allowed"
    REQUIRED = "required"


class Residency(StrEnum):
    CN_MAINLAND = "cn-mainland"
    ANY = "any"


_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9_.\-/]{0,61}[a-z0-9])?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV_PREFIX = "SZB_"
"""The broker's bootstrap and executors set `SZB_*` variables; a job may not override them."""

# Hard ceilings, whatever the policy says; per-tenant limits (broker.quota) are lower.
MAX_ARGV = 4096
MAX_ENV = 4096
MAX_LABELS = 1024
MAX_ANY_OF = 64
MIN_DEADLINE = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DEADLINE = datetime(9000, 1, 1, tzinfo=UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _SpecPart(BaseModel):
    # inf/nan would be written to JSON as null and fail every later read (a poison row).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class AcceleratorRequest(_SpecPart):
    """How many accelerators of which models a job needs; count 0 means none."""

    count: int = Field(default=0, ge=0, le=1024)
    any_of: tuple[str, ...] = Field(default=(), max_length=MAX_ANY_OF)
    min_memory_gb: float = Field(default=0, ge=0, le=1_000_000)

    @field_validator("any_of")
    @classmethod
    def _names_not_blank(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name.strip() for name in v):
            raise ValueError("accelerator names must not be empty")
        if any(len(name) > 128 for name in v):
            raise ValueError("accelerator names must be at most 128 characters")
        return v


class Resources(_SpecPart):
    """Per node: accelerators, CPUs and memory; `nodes` > 1 is a gang placed all-or-nothing."""

    accelerators: AcceleratorRequest = AcceleratorRequest()
    cpus: float = Field(default=1, gt=0, le=4096)
    memory_gb: float = Field(default=1, gt=0, le=65536)
    nodes: int = Field(default=1, ge=1, le=256)


class Checkpoint(_SpecPart):
    """How often the job saves its progress (a restart resumes from the last checkpoint)."""

    interval: Duration

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be > 0")
        return whole_seconds(v)


class JobSpec(_SpecPart):
    """The user's unit of work, exactly as written in a job YAML or sent on the wire."""

    name: str = Field(pattern=_NAME, min_length=1, max_length=63)
    command: tuple[str, ...] = Field(min_length=1, max_length=MAX_ARGV)
    image: str | None = Field(default=None, min_length=1, max_length=512)
    env: dict[str, str] = Field(default_factory=dict, max_length=MAX_ENV)
    resources: Resources = Resources()
    runtime_estimate: Duration
    max_wait: Duration | None = None
    deadline: datetime | None = None
    priority: Priority = Priority.NORMAL
    spot: SpotMode = SpotMode.ALLOWED
    max_price_per_hour: float | None = Field(default=None, gt=0)
    data_residency: Residency = Residency.ANY
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)
    checkpoint: Checkpoint | None = None

    @field_validator("command")
    @classmethod
    def _argv0_not_blank(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v[0].strip():
            raise ValueError("the program (first argument) must not be empty")
        if any("\x00" in arg for arg in v):
            raise ValueError("arguments must not contain NUL bytes")
        return v

    @field_validator("env")
    @classmethod
    def _env_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _ENV_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.upper().startswith(RESERVED_ENV_PREFIX):
                raise ValueError(
                    f"{key}: names starting with {RESERVED_ENV_PREFIX} are reserved for the broker"
                )
            if "\x00" in value:
                raise ValueError(f"{key}: value must not contain NUL bytes")
        return v

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} must be 1-63 chars of [a-z0-9_.-/]")
            if len(value) > 63:
                raise ValueError(f"label {key}: value longer than 63 characters")
        return v

    @field_validator("image")
    @classmethod
    def _image_reference(cls, v: str | None) -> str | None:
        return None if v is None else check_image(v)

    @field_validator("runtime_estimate")
    @classmethod
    def _runtime_positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be > 0")
        if v > timedelta(days=90):
            raise ValueError("must be at most 90d")
        return whole_seconds(v)

    @field_validator("max_wait")
    @classmethod
    def _wait_not_negative(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(0):
            raise ValueError("must be >= 0")
        return None if v is None else whole_seconds(v)

    @field_validator("deadline")
    @classmethod
    def _deadline_has_zone(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        if v.tzinfo is None:
            raise ValueError("must include a UTC offset, e.g. 2026-12-01T00:00:00+08:00")
        try:
            utc = v.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("must be between 1970-01-01 and 9000-01-01") from exc
        if not MIN_DEADLINE <= utc < MAX_DEADLINE:
            raise ValueError("must be between 1970-01-01 and 9000-01-01")
        # Kept in UTC, so the stored text and the wire Timestamp name the same instant.
        return utc

    @property
    def accelerator_count(self) -> int:
        return self.resources.accelerators.count


class Job(_Frozen):
    """A stored job: the spec plus everything the broker learned about it."""

    id: JobId
    tenant: TenantId
    spec: JobSpec
    client_id: str | None = None
    state: JobState = JobState.QUEUED
    created_at: datetime
    updated_at: datetime
    site: SiteId | None = None
    attempts: int = 0
    exit_code: int | None = None
    log_tail: str = ""
    message: str = ""
    policy_hash: str = ""


class JobEvent(_Frozen):
    """One appended entry of a job's audit log; `seq` counts from 1 per job."""

    job_id: JobId
    seq: int
    time: datetime
    kind: str
    state: JobState
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class Offer(_Frozen):
    """A concrete way to run a job: site x instance type or partition x accelerators x price."""

    site: SiteId
    instance_type: str
    accelerator: str | None
    count: int = Field(ge=0)
    price_per_hour: float = Field(ge=0)
    currency: str = "CNY"
    spot: bool = False
    region: str = ""
    zone: str = ""
    cpus: float = 0
    memory_gb: float = 0
    accelerator_memory_gb: float = 0
    free: int | None = None
    """Accelerators free right now (CPU cores for CPU-only offers), when the site knows."""
    expected_wait_s: float = 0
    price_read_at: datetime | None = None

    @property
    def partition(self) -> str:
        """`site/instance type`: offers of different sizes from one partition share its capacity."""
        return f"{self.site}/{self.instance_type}"

    @property
    def key(self) -> str:
        """Stable identity of an offer, used for ties and the failover blocklist."""
        market = "spot" if self.spot else "ondemand"
        return f"{self.site}/{self.zone or self.region or '-'}/{self.instance_type}/{market}"


class AttemptState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"
    LOST = "LOST"

    @property
    def terminal(self) -> bool:
        return self not in (AttemptState.PENDING, AttemptState.RUNNING)


BROKER_SIDE = "broker-side: "
"""Prefix of an attempt's error when it ended for a reason on the broker's side (the broker
was down or restarted): such an attempt never counts against its route, a circuit breaker or
the job's attempts."""


class Attempt(_Frozen):
    """One try of a job on one offer; the token is stored before the backend is called."""

    id: AttemptId
    job_id: JobId
    number: int
    site: SiteId
    offer: Offer
    token: str
    """Idempotency token; names the attempt at its backend and grants no agent rights."""
    state: AttemptState = AttemptState.PENDING
    backend_id: str | None = None
    created_at: datetime
    updated_at: datetime
    error: str = ""
    secret_hash: str = Field(default="", repr=False)
    """SHA-256 of the attempt's agent secret (the secret itself is never stored)."""

    @property
    def broker_side(self) -> bool:
        """It ended because of the broker, not the backend (see `BROKER_SIDE`)."""
        return self.error.startswith(BROKER_SIDE)


class LaunchRequest(_Frozen):
    """What an adapter needs to start one attempt."""

    job_id: JobId
    attempt_id: AttemptId
    token: str
    """Idempotency token: the same token never starts a second instance or process."""
    spec: JobSpec
    offer: Offer
    agent_endpoint: str = ""
    agent_ca_pem: str = ""
    """PEM CA bundle the instance verifies the agent endpoint with (empty: its system roots)."""
    agent_token: str = Field(default="", repr=False)
    """The attempt's agent secret: only for the job's own environment or UserData."""
    account: str = ""
    """The batch system's account to charge (Slurm `--account`: the tenant's, for fair share)."""
    qos: str = ""
    """The batch system's quality of service (Slurm `--qos`), when the policy maps one."""
    first_call: bool = False
    """True only for the very first call with this token: nothing can exist under it yet, so
    adapters may skip looking for an earlier launch (retries and recovery leave it False)."""
    node_rank: int = Field(default=0, ge=0)
    """A gang's node (0 … nodes-1) this launch starts; 0 for a one-node job."""
    group: str = ""
    """The placement group (EC2) or deployment set (ECS) a gang's node joins; empty otherwise."""
    master_addr: str = ""
    """Address of a gang's rank 0, for the other ranks (rank 0 finds its own at boot)."""


class AttemptStatus(_Frozen):
    state: AttemptState
    exit_code: int | None = None
    log_tail: str = ""
    message: str = ""


class OwnedInstance(_Frozen):
    """An instance, process or batch job at a site carrying this broker's marks."""

    site: SiteId
    backend_id: str
    token: str | None = None
    job_id: JobId | None = None
    attempt_id: AttemptId | None = None
    state: AttemptState = AttemptState.RUNNING
    stopped: bool = False
    """Stopped but not deleted (ECS `Stopped`, EC2 `stopped`): it still holds disks and
    addresses, so the reconciler deletes it when no live attempt owns it."""


class PartitionCapacity(_Frozen):
    """Free and total accelerators of one partition and what is queued there."""

    name: str
    accelerator: str | None
    total: int = Field(ge=0)
    free: int = Field(ge=0)
    queued_jobs: int = 0
    queued_accelerator_hours: float = 0
    running_accelerator_hours_left: float = 0
    expected_wait_s: float | None = None
    """The backend's own estimate of how long a new job would wait here, when it has one."""


class CapacitySnapshot(_Frozen):
    site: SiteId
    taken_at: datetime
    partitions: tuple[PartitionCapacity, ...] = ()

    def partition_for(self, accelerator: str | None) -> PartitionCapacity | None:
        for part in self.partitions:
            if part.accelerator == accelerator:
                return part
        return None


def spec_from_mapping(data: Mapping[str, Any]) -> JobSpec:
    """Validate a mapping (YAML or wire) into a JobSpec; raises pydantic.ValidationError."""
    return JobSpec.model_validate(dict(data))
