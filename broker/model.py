"""Domain types shared by the core, the store, the adapters and the gRPC edge.

Values are frozen pydantic models so they validate on the way in (a job spec from YAML or
from the wire) and cannot be mutated on the way through. The job spec itself lives in
`broker.jobspec` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

from pydantic import BaseModel, ConfigDict, Field

from broker.jobspec import (
    AcceleratorRequest,
    Checkpoint,
    JobSpec,
    Priority,
    Residency,
    Resources,
    SpotMode,
    spec_from_mapping,
)

# Re-exported: the job spec is part of the domain every layer imports from here.
__all__ = [
    "AcceleratorRequest",
    "Checkpoint",
    "JobSpec",
    "Priority",
    "Residency",
    "Resources",
    "SpotMode",
    "spec_from_mapping",
]

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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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


OTHERS_JOB = "another tenant's job"
NAMES_OTHERS = ("reclaimed_by", "stopped_by", "for_job")
"""Event data naming the tenant and job another job was stopped for (`others_unnamed`)."""
NAMES_VICTIM = ("attempt", "tenant", "why")
"""What a decision's reclaim entry says of the borrowed attempt it stops (`others_unnamed`)."""


def job_named_for(job_id: str, tenant: str, reader: str) -> str:
    """A job as a reason that `reader`'s tenant reads names it: another tenant's job id and
    tenant name are not that tenant's to learn (its owner, or an operator, looks them up)."""
    return f"job {job_id}" if tenant == reader else OTHERS_JOB


def others_unnamed(data: Mapping[str, Any], tenant: str) -> dict[str, Any]:
    """Event or decision data of `tenant`'s job as that tenant reads it: without another tenant's
    name, job or attempt ids (whose job its job was stopped for; whose work a reclaim for it
    stops), which what is stored keeps for operators."""
    out = dict(data)
    by = out.get("reclaimed_by", out.get("stopped_by"))
    if by is not None and by != tenant:
        for key in NAMES_OTHERS:
            out.pop(key, None)
    if isinstance(out.get("reclaim"), list):
        out["reclaim"] = [
            {k: x for k, x in v.items() if k not in NAMES_VICTIM}
            if isinstance(v, Mapping) and v.get("tenant") != tenant else v
            for v in out["reclaim"]
        ]
    return out


def by_others(event: JobEvent, tenant: str) -> JobEvent:
    """`event` of `tenant`'s job as that tenant reads it (`others_unnamed`)."""
    data = others_unnamed(event.data, tenant)
    return event if data == event.data else event.model_copy(update={"data": data})


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
    releases: tuple[tuple[float, int], ...] = Field(default=(), exclude=True)
    """On-prem: (seconds until freed, units) of the running work this broker did not start, by
    its time limit, soonest first, when the backend knows (`PartitionCapacity.releases`). A
    reading of the moment, never stored with an attempt's offer (nor read back by an older broker)."""
    free_by_node: tuple[int, ...] = Field(default=(), exclude=True)
    """On-prem: free units of each node, most first, when the backend knows
    (`PartitionCapacity.free_by_node`); a reading of the moment, never stored."""
    stranded: tuple[str, ...] = Field(default=(), exclude=True)
    """On-prem: backend ids of running jobs on nodes that take no new work
    (`PartitionCapacity.stranded`); a reading of the moment, never stored."""
    queued: tuple[tuple[int, float, str], ...] = Field(default=(), exclude=True)
    """On-prem: (units, seconds it may run, backend id if this broker's else "") of each job in
    the backend's own queue for these units, in its order (`PartitionCapacity.queued`); a
    reading of the moment, never stored."""

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

JOB_SIDE = "job-side: "
"""Prefix of a lost attempt's error when its own job ended it (it powered its instance off, or
killed its agent while the instance ran): it uses up one of the job's attempts, but blames
neither the offer (no block) nor the route (no failure toward its throttle)."""


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

    @property
    def job_side(self) -> bool:
        """It ended because of its own job, not its offer or route (see `JOB_SIDE`)."""
        return self.error.startswith(JOB_SIDE)


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
    user: str = ""
    """The Unix user the job runs as at a batch system (`tenants[].batch.user`); "": the site's."""
    first_call: bool = False
    """True only for the very first call with this token: nothing can exist under it yet, so
    adapters may skip looking for an earlier launch (retries and recovery leave it False)."""
    node_rank: int = Field(default=0, ge=0)
    """A gang's node (0 … nodes-1) this launch starts; 0 for a one-node job."""
    group: str = ""
    """The placement group (EC2) or deployment set (ECS) a gang's node joins; empty otherwise."""
    master_addr: str = ""
    """Address of a gang's rank 0, for the other ranks (rank 0 finds its own at boot)."""
    attempt_number: int = Field(default=1, ge=1)
    """The attempt's number for its job (1: the first; more after a preemption or a failover)."""

    def resume_vars(self) -> dict[str, str]:
        """What the job reads to resume: `SZB_ATTEMPT_NUMBER` (above 1: an earlier attempt may
        have saved a checkpoint) and `SZB_CHECKPOINT_INTERVAL_S` when its spec checkpoints.
        The broker prices spot on the job saving and resuming its own checkpoints."""
        out = {"SZB_ATTEMPT_NUMBER": str(self.attempt_number)}
        if self.spec.checkpoint is not None:
            # Whole seconds (specs allow no less), as an integer a job can parse: `:g` wrote
            # intervals of 1e6 s and more (11.6 days) as 1.0368e+06.
            out["SZB_CHECKPOINT_INTERVAL_S"] = str(int(self.spec.checkpoint.interval.total_seconds()))
        return out


class AttemptStatus(_Frozen):
    state: AttemptState
    exit_code: int | None = None
    log_tail: str = ""
    message: str = ""
    cause: str = ""
    """Why the backend stopped the job when it did not end by itself (a time limit, memory):
    the job's message gives it with the exit code. On a PENDING status: why the job is held or
    suspended there, so that it does not start or go on by itself (the job's message says so)."""
    stopped_at: datetime | None = None
    """When the backend says the machine stopped (an instance that powered itself off while the
    broker was down): a terminal attempt's spend is settled to then, not to when it was learnt."""
    started_at: datetime | None = None
    """When the backend says the job started running (Slurm's start time, the local executor's
    start of its process; None: not known). A job that ran and ended between two polls gets its
    RUNNING event at this time rather than at the poll that saw it end."""
    reclaiming: bool = False
    """The cloud reclaims the still-running instance itself after a spot notice (ECS's Recycling
    lock): the broker leaves it be, so the job keeps the notice's minutes to save a checkpoint."""


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
    releases: tuple[tuple[float, int], ...] = ()
    """(seconds until freed, units) of each running job this broker did not start (another
    user's work), soonest first, when the backend knows: the broker projects waits behind it."""
    free_by_node: tuple[int, ...] = ()
    """Free units on each usable node, most first, when the backend knows (Slurm): a job over
    several nodes starts only where that many nodes each have its share free."""
    stranded: tuple[str, ...] = ()
    """Backend ids of this broker's running jobs wholly on nodes that take no new work (draining,
    reserved for others): the units they free are no capacity for new work."""
    queued: tuple[tuple[int, float, str], ...] = ()
    """(units, seconds it may hold them (its time limit), backend id if this broker's job else "")
    of each job pending for these units, in the order the backend starts them as far as it says
    (Slurm: its expected start, then priority), when it knows: they start before a new job."""


class CapacitySnapshot(_Frozen):
    site: SiteId
    taken_at: datetime
    partitions: tuple[PartitionCapacity, ...] = ()
    started: tuple[str, ...] = ()
    """Backend ids of this broker's jobs the backend runs, as read (when it says): a status poll
    may not have seen them start yet, and reclaim must not take them for work queued there."""
    started_complete: bool = False
    """`started` names every job of this broker's that holds units here: one not in it has ended
    as far as `free` goes, before a status poll says so (Slurm: a completing job may hold units)."""

    def partition_for(self, accelerator: str | None) -> PartitionCapacity | None:
        for part in self.partitions:
            if part.accelerator == accelerator:
                return part
        return None
