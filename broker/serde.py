"""Proto ⇄ domain mapping for the gRPC edge: `*_to_proto` / `*_from_proto` pairs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict

from broker.api import broker_service_pb2, job_pb2, placement_pb2
from broker.durations import MAX_DURATION_S
from broker.errors import BrokerError
from broker.jobview import JobDetails
from broker.model import (
    Job,
    JobEvent,
    JobId,
    JobSpec,
    JobState,
    Priority,
    Residency,
    SiteId,
    SpotMode,
    TenantId,
)
from broker.offerview import OfferVerdict

_STATE_TO_PROTO = {s: job_pb2.JobState.Value(f"JOB_STATE_{s.value}") for s in JobState}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}
_PRIORITY_TO_PROTO = {p: job_pb2.Priority.Value(f"PRIORITY_{p.name}") for p in Priority}
_PRIORITY_FROM_PROTO = {v: k for k, v in _PRIORITY_TO_PROTO.items()}
_SPOT_TO_PROTO = {s: job_pb2.SpotMode.Value(f"SPOT_MODE_{s.name}") for s in SpotMode}
_SPOT_FROM_PROTO = {v: k for k, v in _SPOT_TO_PROTO.items()}
_RES_TO_PROTO = {r: job_pb2.DataResidency.Value(f"DATA_RESIDENCY_{r.name}") for r in Residency}
_RES_FROM_PROTO = {v: k for k, v in _RES_TO_PROTO.items()}


class WireValueError(BrokerError, ValueError):
    """A wire value the domain cannot hold (out-of-range Duration/Timestamp, unknown enum)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class UnknownEnumError(WireValueError):
    """A proto enum number we do not know (a newer or hostile client)."""

    def __init__(self, field: str, value: int) -> None:
        super().__init__(field, f"unknown enum value {value}")


# google.protobuf.Duration / Timestamp ranges (their .proto files define them).
_DURATION_MAX_S = 315_576_000_000
_TS_MIN_S = -62_135_596_800
_TS_MAX_S = 253_402_300_799
_NANOS = 999_999_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts_to_proto(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def ts_from_proto(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def checked_duration(value: duration_pb2.Duration, field: str) -> timedelta:
    """A wire Duration as a timedelta; WireValueError when it is not a valid whole-second one.

    Specs store durations as `1h30m`, so a sub-second part would be lost: it is refused.
    """
    seconds, nanos = value.seconds, value.nanos
    if abs(seconds) > _DURATION_MAX_S or abs(nanos) > _NANOS or (seconds * nanos < 0):
        raise WireValueError(field, "is not a valid google.protobuf.Duration")
    if nanos:
        raise WireValueError(field, "must be a whole number of seconds (nanos = 0)")
    if abs(seconds) > MAX_DURATION_S:
        raise WireValueError(field, "must be at most 10 years")
    return timedelta(seconds=seconds)


def checked_timestamp(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A wire Timestamp as an aware datetime (to the microsecond); WireValueError out of range."""
    if not _TS_MIN_S <= value.seconds <= _TS_MAX_S or not 0 <= value.nanos <= _NANOS:
        raise WireValueError(field, "is not a valid google.protobuf.Timestamp")
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def duration_to_proto(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def state_to_proto(state: JobState) -> job_pb2.JobState.ValueType:
    return _STATE_TO_PROTO[state]


def state_from_proto(value: int) -> JobState:
    if value not in _STATE_FROM_PROTO:
        raise UnknownEnumError("states", value)
    return _STATE_FROM_PROTO[value]  # type: ignore[index]


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
        data["runtime_estimate"] = checked_duration(msg.runtime_estimate, "runtime_estimate")
    if msg.HasField("max_wait"):
        data["max_wait"] = checked_duration(msg.max_wait, "max_wait")
    if msg.HasField("deadline"):
        data["deadline"] = checked_timestamp(msg.deadline, "deadline")
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


_ACTION_TO_PROTO = {
    "run": placement_pb2.DECISION_ACTION_RUN,
    "wait": placement_pb2.DECISION_ACTION_WAIT,
    "reject": placement_pb2.DECISION_ACTION_REJECT,
}
_ACTION_FROM_PROTO = {v: k for k, v in _ACTION_TO_PROTO.items()}
_OPTIONAL_NUMBERS = {
    "onprem_expected_wait_s": "onprem_expected_wait_seconds",
    "onprem_total_cost": "onprem_total_cost",
    "cloud_total_cost": "cloud_total_cost",
    "cash": "cash",
    "voucher": "voucher",
}
_WAIT_NUMBERS = {
    "waited_s": "waited_seconds",
    "max_wait_s": "max_wait_seconds",
    "remaining_wait_s": "remaining_wait_seconds",
}


def _ts_from_iso(text: str | None) -> timestamp_pb2.Timestamp | None:
    return ts_to_proto(datetime.fromisoformat(text)) if text else None


def decision_to_proto(d: Mapping[str, Any]) -> placement_pb2.Decision:
    """The typed wire form of a decision's JSON (`broker.burst.explain_json()["decision"]`)."""
    msg = placement_pb2.Decision(
        action=_ACTION_TO_PROTO.get(str(d.get("action")), placement_pb2.DECISION_ACTION_UNSPECIFIED),
        burst=bool(d.get("burst")),
        reasons=[str(r) for r in d.get("reasons", ())],
        offer_key=d.get("offer_key") or "",
        price_per_hour=float(d.get("price_per_hour") or 0.0),
        price_currency=d.get("price_currency") or "",
        currency=d.get("currency") or "",
        onprem_site=d.get("onprem_site") or "",
        cloud_offer=d.get("cloud_offer") or "",
    )
    for key, field in _WAIT_NUMBERS.items():
        setattr(msg, field, float(d.get(key) or 0.0))
    for key, field in _OPTIONAL_NUMBERS.items():
        if d.get(key) is not None:
            setattr(msg, field, float(d[key]))
    for key in ("price_read_at", "burst_pending_since"):
        ts = _ts_from_iso(d.get(key))
        if ts is not None:
            getattr(msg, key).CopyFrom(ts)
    return msg


def decision_from_proto(msg: placement_pb2.Decision) -> dict[str, Any]:
    """The decision JSON back from its typed wire form (the CLI renders it)."""
    d: dict[str, Any] = {
        "action": _ACTION_FROM_PROTO.get(msg.action, "unspecified"),
        "burst": msg.burst,
        "reasons": list(msg.reasons),
        "currency": msg.currency,
    }
    for key, field in _WAIT_NUMBERS.items():
        d[key] = round(getattr(msg, field))
    if msg.offer_key:
        d.update(
            offer_key=msg.offer_key, price_per_hour=msg.price_per_hour, price_currency=msg.price_currency
        )
    if msg.onprem_site:
        d["onprem_site"] = msg.onprem_site
    if msg.cloud_offer:
        d["cloud_offer"] = msg.cloud_offer
    for key, field in _OPTIONAL_NUMBERS.items():
        if msg.HasField(field):  # type: ignore[arg-type]
            d[key] = getattr(msg, field)
    for key in ("price_read_at", "burst_pending_since"):
        if msg.HasField(key):  # type: ignore[arg-type]
            d[key] = ts_from_proto(getattr(msg, key)).isoformat()
    return d


def _scored_to_proto(d: Mapping[str, Any]) -> placement_pb2.ScoredOffer:
    return placement_pb2.ScoredOffer(
        site=d["site"],
        country=d.get("country") or "",
        residency=d.get("residency") or "",
        instance_type=d["instance_type"],
        accelerator=d.get("accelerator") or "",
        count=d["count"],
        spot=d["spot"],
        price_per_hour=d["price_per_hour"],
        currency=d.get("currency") or "",
        allowed=d["allowed"],
        reasons=[placement_pb2.Reason(rule=r["rule"], message=r["message"]) for r in d["reasons"]],
        score=d["score"] if d.get("score") is not None else 0.0,
        terms={k: float(v) for k, v in d.get("terms", {}).items()},
        expected_wait_seconds=d.get("expected_wait_s") or 0.0,
        zone=d.get("zone") or "",
        region=d.get("region") or "",
    )


def _scored_from_proto(m: placement_pb2.ScoredOffer) -> dict[str, Any]:
    return {
        "site": m.site,
        "country": m.country or None,
        "residency": m.residency or None,
        "instance_type": m.instance_type,
        "accelerator": m.accelerator or None,
        "count": m.count,
        "spot": m.spot,
        "price_per_hour": m.price_per_hour,
        "currency": m.currency,
        "expected_wait_s": m.expected_wait_seconds,
        "zone": m.zone,
        "region": m.region,
        "allowed": m.allowed,
        "reasons": [{"rule": r.rule, "message": r.message} for r in m.reasons],
        "score": m.score if m.allowed else None,
        "terms": dict(m.terms),
    }


def explanation_to_proto(body: Mapping[str, Any]) -> placement_pb2.Explanation:
    """`broker.burst.explain_json` output as the typed wire Explanation (JSON kept as an extra)."""
    decision = body.get("decision", {})
    msg = placement_pb2.Explanation(
        offers=[_scored_to_proto(o) for o in body["offers"]],
        policy_hash=body["policy_hash"],
        decision_json=json.dumps(decision, default=str),
        decision=decision_to_proto(decision),
        rejections=[
            placement_pb2.RuleCount(rule=r["rule"], offers=r["offers"], message=r["message"])
            for r in body.get("rejections", ())
        ],
        allowed_offers=int(body.get("allowed_offers", 0)),
        currency=body.get("score_currency") or decision.get("currency") or "",
    )
    if body.get("chosen"):
        msg.chosen.CopyFrom(_scored_to_proto(body["chosen"]))
    return msg


def explanation_from_proto(msg: placement_pb2.Explanation) -> dict[str, Any]:
    """The same JSON shape `broker.burst.explain_json` gives offline, from the wire."""
    offers = [_scored_from_proto(o) for o in msg.offers]
    allowed = [o for o in offers if o["allowed"]]
    return {
        "chosen": _scored_from_proto(msg.chosen) if msg.HasField("chosen") else None,
        "placement_best": min(allowed, key=lambda o: o["score"]) if allowed else None,
        "offers": offers,
        "policy_hash": msg.policy_hash,
        "score_currency": msg.currency,
        "rejections": [{"rule": r.rule, "offers": r.offers, "message": r.message} for r in msg.rejections],
        "allowed_offers": msg.allowed_offers,
        "decision": decision_from_proto(msg.decision),
    }


def offers_to_proto(
    verdicts: Sequence[OfferVerdict], tenant: str, currency: str, policy_hash: str
) -> broker_service_pb2.ListOffersResponse:
    """`szb offers`: each offer with its price (own and policy currency) and verdict."""
    resp = broker_service_pb2.ListOffersResponse(
        tenant=tenant, policy_currency=currency, policy_hash=policy_hash
    )
    for v in verdicts:
        o = v.offer
        row = broker_service_pb2.AvailableOffer(
            site=o.site,
            region=o.region,
            zone=o.zone,
            instance_type=o.instance_type,
            accelerator=o.accelerator or "",
            count=o.count,
            spot=o.spot,
            price_per_hour=o.price_per_hour,
            currency=o.currency,
            price_per_hour_policy=round(v.price_in_policy_currency, 4),
            expected_wait_seconds=o.expected_wait_s,
            allowed=v.allowed,
            reasons=[placement_pb2.Reason(rule=r.rule, message=r.message) for r in v.reasons],
        )
        if o.free is not None:
            row.free = o.free
        resp.offers.append(row)
    return resp
