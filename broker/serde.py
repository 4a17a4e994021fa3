"""Proto ⇄ domain mapping for the gRPC edge: `*_to_proto` / `*_from_proto` pairs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict

from broker.api import job_pb2
from broker.jobspec import MAX_RUNTIME_ESTIMATE
from broker.jobview import JobDetails
from broker.model import (
    Job,
    JobEvent,
    JobId,
    JobSpec,
    SiteId,
    TenantId,
)
from broker.serde_explain import (
    decision_from_proto,
    decision_to_proto,
    explanation_from_proto,
    explanation_to_proto,
    offers_to_proto,
)
from broker.serde_wire import (
    _PRIORITY_FROM_PROTO,
    _PRIORITY_TO_PROTO,
    _RES_FROM_PROTO,
    _RES_TO_PROTO,
    _SPOT_FROM_PROTO,
    _SPOT_TO_PROTO,
    _STATE_TO_PROTO,
    UnknownEnumError,
    WireValueError,
    checked_duration,
    checked_known_fields,
    checked_timestamp,
    duration_to_proto,
    state_from_proto,
    state_to_proto,
    ts_from_proto,
    ts_to_proto,
)

# Split in three modules (primitives, jobs, explanations); importers keep using `broker.serde`.
__all__ = [
    "UnknownEnumError", "WireValueError", "checked_duration", "checked_known_fields", "checked_timestamp",
    "decision_from_proto", "decision_to_proto", "duration_to_proto", "explanation_from_proto",
    "explanation_to_proto", "offers_to_proto", "state_from_proto", "state_to_proto",
    "ts_from_proto", "ts_to_proto",
]  # fmt: skip

def spec_mapping_from_proto(msg: job_pb2.JobSpec) -> dict[str, Any]:
    """The wire spec as the mapping JobSpec validates; unset fields take their defaults."""
    # proto3 cannot tell "" from unset: an empty required field is reported as missing.
    data: dict[str, Any] = {}
    if msg.name:
        data["name"] = msg.name
    if msg.command:
        data["command"] = list(msg.command)
    if msg.image:
        data["image"] = msg.image
    if msg.env:
        data["env"] = dict(msg.env)
    if msg.HasField("resources"):
        res: dict[str, Any] = {}
        r = msg.resources
        if r.HasField("accelerators"):
            a = r.accelerators
            res["accelerators"] = {
                "count": a.count,
                "any_of": list(a.any_of),
                "min_memory_gb": a.min_memory_gb,
            }
        if r.cpus:
            res["cpus"] = r.cpus
        if r.memory_gb:
            res["memory_gb"] = r.memory_gb
        if r.nodes:
            res["nodes"] = r.nodes
        data["resources"] = res
    if msg.HasField("runtime_estimate"):
        data["runtime_estimate"] = checked_duration(
            msg.runtime_estimate, "runtime_estimate", longest=MAX_RUNTIME_ESTIMATE
        )
    if msg.HasField("max_wait"):
        data["max_wait"] = checked_duration(msg.max_wait, "max_wait")
    if msg.HasField("deadline"):
        data["deadline"] = checked_timestamp(msg.deadline, "deadline", exact=True)
    for field, table, value in (
        ("priority", _PRIORITY_FROM_PROTO, msg.priority),
        ("spot", _SPOT_FROM_PROTO, msg.spot),
        ("data_residency", _RES_FROM_PROTO, msg.data_residency),
    ):
        if value == 0:
            continue
        if value not in table:
            raise UnknownEnumError(field, value)
        data[field] = table[value]  # type: ignore[index]
    if msg.HasField("max_price_per_hour"):
        data["max_price_per_hour"] = msg.max_price_per_hour
    if msg.labels:
        data["labels"] = dict(msg.labels)
    if msg.HasField("checkpoint"):
        cp = msg.checkpoint
        interval = checked_duration(cp.interval, "checkpoint.interval") if cp.HasField("interval") else None
        data["checkpoint"] = {"interval": interval} if interval is not None else {}
    return data


def spec_from_proto(msg: job_pb2.JobSpec) -> JobSpec:
    """Validate a wire spec; raises pydantic.ValidationError or WireValueError."""
    return JobSpec.model_validate(spec_mapping_from_proto(msg))


def spec_to_proto(spec: JobSpec) -> job_pb2.JobSpec:
    acc = spec.resources.accelerators
    msg = job_pb2.JobSpec(
        name=spec.name,
        command=list(spec.command),
        image=spec.image or "",
        env=spec.env,
        resources=job_pb2.Resources(
            accelerators=job_pb2.AcceleratorRequest(
                count=acc.count, any_of=list(acc.any_of), min_memory_gb=acc.min_memory_gb
            ),
            cpus=spec.resources.cpus,
            memory_gb=spec.resources.memory_gb,
            nodes=spec.resources.nodes if spec.resources.nodes > 1 else 0,
        ),
        runtime_estimate=duration_to_proto(spec.runtime_estimate),
        priority=_PRIORITY_TO_PROTO[spec.priority],
        spot=_SPOT_TO_PROTO[spec.spot],
        data_residency=_RES_TO_PROTO[spec.data_residency],
        labels=spec.labels,
    )
    if spec.max_wait is not None:
        msg.max_wait.CopyFrom(duration_to_proto(spec.max_wait))
    if spec.deadline is not None:
        msg.deadline.CopyFrom(ts_to_proto(spec.deadline))
    if spec.max_price_per_hour is not None:
        msg.max_price_per_hour = spec.max_price_per_hour
    if spec.checkpoint is not None:
        msg.checkpoint.interval.CopyFrom(duration_to_proto(spec.checkpoint.interval))
    return msg


MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""The largest message the broker takes or sends (and `szb` accepts)."""
MAX_ANSWER_BYTES = 3 * 1024 * 1024
"""Jobs an answer carries stop at about this size (a ListJobs page ends early, a SubmitJobs answer
leaves out the rest of the specs): it then stays under the 4 MiB gRPC clients accept by default."""


def within_answer(msg: job_pb2.Job, used: int = 0) -> job_pb2.Job:
    """`msg` as an answer that has `used` bytes already carries it: without its spec when it
    would pass `MAX_ANSWER_BYTES` (a spec may be up to `max_spec_bytes`; GetJob has it whole)."""
    if used + msg.ByteSize() > MAX_ANSWER_BYTES:
        msg.ClearField("spec")
    return msg


def job_to_proto(
    job: Job, spec: job_pb2.JobSpec | None = None, details: JobDetails | None = None
) -> job_pb2.Job:
    """The wire form of a job; `spec` reuses the message a fresh job was submitted as."""
    msg = job_pb2.Job(
        id=job.id,
        tenant=job.tenant,
        spec=spec if spec is not None else spec_to_proto(job.spec),
        client_id=job.client_id or "",
        state=_STATE_TO_PROTO[job.state],
        create_time=ts_to_proto(job.created_at),
        update_time=ts_to_proto(job.updated_at),
        site=job.site or "",
        attempts=job.attempts,
        log_tail=job.log_tail,
        message=job.message,
        policy_hash=job.policy_hash,
    )
    if job.exit_code is not None:
        msg.exit_code = job.exit_code
    if details is not None:
        msg.instance_type = details.instance_type
        msg.accelerator = details.accelerator
        msg.accelerator_count = details.accelerator_count
        msg.cost_so_far = details.cost_so_far
        msg.cost_currency = details.currency
        msg.pending_reason = details.pending_reason
        if details.started_at is not None:
            msg.start_time.CopyFrom(ts_to_proto(details.started_at))
        if details.ended_at is not None:
            msg.end_time.CopyFrom(ts_to_proto(details.ended_at))
    return msg


def job_from_proto(msg: job_pb2.Job) -> Job:
    """Used by clients (the CLI) to get domain objects back."""
    return Job(
        id=JobId(msg.id),
        tenant=TenantId(msg.tenant),
        spec=spec_from_proto(msg.spec),
        client_id=msg.client_id or None,
        state=state_from_proto(msg.state),
        created_at=ts_from_proto(msg.create_time),
        updated_at=ts_from_proto(msg.update_time),
        site=SiteId(msg.site) if msg.site else None,
        attempts=msg.attempts,
        exit_code=msg.exit_code if msg.HasField("exit_code") else None,
        log_tail=msg.log_tail,
        message=msg.message,
        policy_hash=msg.policy_hash,
    )


def _struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(_jsonable(data))
    return s


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def event_to_proto(event: JobEvent) -> job_pb2.JobEvent:
    return job_pb2.JobEvent(
        job_id=event.job_id,
        seq=event.seq,
        time=ts_to_proto(event.time),
        kind=event.kind,
        state=_STATE_TO_PROTO[event.state],
        message=event.message,
        data=_struct(event.data),
    )


def event_from_proto(msg: job_pb2.JobEvent) -> JobEvent:
    return JobEvent(
        job_id=JobId(msg.job_id),
        seq=msg.seq,
        time=ts_from_proto(msg.time),
        kind=msg.kind,
        state=state_from_proto(msg.state),
        message=msg.message,
        data=MessageToDict(msg.data),
    )
