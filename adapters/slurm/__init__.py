"""On-prem Slurm clusters through slurmrestd (JWT auth), one partition per accelerator model.

The broker's on-prem site: ``adapters.slurm:SlurmAdapter`` (entry point ``slurm``). Modules:

* `adapters.slurm._adapter`: `SlurmAdapter` (submit, status, cancel, preempt, list_owned, capacity,
  offers); it does not list ``Capability.QUEUES_JOBS`` as missing: jobs may be sent here to pend.
* `adapters.slurm._config`: partitions (the policy's list or a mapping), gres types, and
  the partition an attempt is submitted to.
* `adapters.slurm._owners`: jobs of tenant users: the user a job is submitted as, the check
  that Slurm runs it as that user, and stopping it as its owner.
* `adapters.slurm._ledger`: which job each idempotency token started (``<token>.jobid`` markers).
* `adapters.slurm._gone`: which job record is an attempt's (its marks), and the result of an
  attempt whose job slurmctld no longer has (purged, or its id reissued), from its token's files.
* `adapters.slurm._script`: the batch script and job description of one attempt.
* `adapters.slurm._offers`: the site's capacity snapshot, offers and expected waits.
* `adapters.slurm._capacity`: free/total units per partition and the expected-wait model.
* `adapters.slurm._stop`: the graceful stop of reclaim (a time limit cut to run time + grace).
* `adapters.slurm._refusals`: which submit refusals are the job's own (too large, too long).
* `adapters.slurm._client`: slurmrestd over HTTP (JWT, API version).
* `adapters.slurm._errors`: the one Slurm error table (code -> what dispatch does).
* `adapters.slurm._jobs`: the job table, one ``GET jobs`` shared for ``jobs_cache_s`` by
  capacity/status, re-checked with ``?update_time=`` (HTTP 304 when unchanged).
* `adapters.slurm._records`: decoding states, numbers, exit codes, gres strings, marks, and
  an attempt's status from its job record.

Idempotency: ``submit`` looks the attempt's token up in the ledger (memory, a
``<output_dir>/<token>.jobid`` marker that outlives slurmctld's MinJobAge purge, then the
job comments) before submitting, so a retried submit returns the first job instead of
starting a second one. v0.0.38 (Slurm
22.05) is the API version tested against real daemons; newer ones differ only in the places
marked "version-specific".
"""

from adapters.slurm._adapter import DEFAULT_BROKER_ID, SlurmAdapter
from adapters.slurm._capacity import (
    PartitionState,
    PendingWork,
    RunningWork,
    estimate_wait_s,
    partition_wait_s,
    read_partitions,
)
from adapters.slurm._client import SUPPORTED_API_VERSIONS, SlurmRest
from adapters.slurm._config import PartitionConfig, default_gres_type, parse_partitions
from adapters.slurm._errors import SLURM_ERRORS, error_for
from adapters.slurm._records import (
    SLURM_STATES,
    decode_exit_code,
    decode_marks,
    encode_marks,
    job_gpus,
    job_state_name,
    parse_gres,
    slurm_number,
)
from adapters.slurm._script import DEFAULT_PATH, ScriptSettings, submit_body

__all__ = [
    "DEFAULT_BROKER_ID",
    "DEFAULT_PATH",
    "SLURM_ERRORS",
    "SLURM_STATES",
    "SUPPORTED_API_VERSIONS",
    "PartitionConfig",
    "PartitionState",
    "PendingWork",
    "RunningWork",
    "ScriptSettings",
    "SlurmAdapter",
    "SlurmRest",
    "decode_exit_code",
    "decode_marks",
    "default_gres_type",
    "encode_marks",
    "error_for",
    "estimate_wait_s",
    "job_gpus",
    "job_state_name",
    "parse_gres",
    "parse_partitions",
    "partition_wait_s",
    "read_partitions",
    "slurm_number",
    "submit_body",
]
