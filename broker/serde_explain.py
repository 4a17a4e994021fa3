"""Placement explanations, decisions and offer lists ⇄ their typed wire forms."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from broker.api import broker_service_pb2, placement_pb2
from broker.offerview import OfferVerdict
from broker.serde_wire import ts_from_proto, ts_to_proto

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
    "burst_in_s": "burst_in_seconds",
}
_PROJECTION_COUNTS = (
    "free_units",
    "running_jobs",
    "backend_queue_jobs",
    "queue_ahead_jobs",
    "queue_ahead_units",
)
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
        onprem_partition=d.get("onprem_partition") or "",
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
    spot = d.get("spot_outlook")
    if spot:
        msg.spot_outlook.CopyFrom(_spot_to_proto(spot))
    p = d.get("projection")
    if p:
        msg.projection.CopyFrom(
            placement_pb2.ProjectedWait(
                partition=p["partition"],
                wait_seconds=float(p["wait_s"]),
                running=[
                    placement_pb2.RunningEnd(units=r["units"], ends_in_seconds=r["ends_in_s"])
                    for r in p["running"]
                ],
                queue_ahead_unit_hours=float(p["queue_ahead_unit_hours"]),
                runtime_ratio=float(p["runtime_ratio"]),
                **{k: int(p[k]) for k in _PROJECTION_COUNTS},
            )
        )
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
    if msg.onprem_partition:
        d["onprem_partition"] = msg.onprem_partition
    if msg.cloud_offer:
        d["cloud_offer"] = msg.cloud_offer
    for key, field in _OPTIONAL_NUMBERS.items():
        if msg.HasField(field):  # type: ignore[arg-type]
            d[key] = getattr(msg, field)
    for key in ("price_read_at", "burst_pending_since"):
        if msg.HasField(key):  # type: ignore[arg-type]
            d[key] = ts_from_proto(getattr(msg, key)).isoformat()
    if msg.HasField("spot_outlook"):
        d["spot_outlook"] = _spot_from_proto(msg.spot_outlook)
    if msg.HasField("projection"):
        p = msg.projection
        d["projection"] = {
            "partition": p.partition,
            "wait_s": p.wait_seconds,
            "running": [{"units": r.units, "ends_in_s": r.ends_in_seconds} for r in p.running],
            "queue_ahead_unit_hours": p.queue_ahead_unit_hours,
            "runtime_ratio": p.runtime_ratio,
            **{k: getattr(p, k) for k in _PROJECTION_COUNTS},
        }
    return d


def _spot_to_proto(o: Mapping[str, Any]) -> placement_pb2.SpotOutlook:
    """A spot outlook (`broker.serde_decision.spot_outlook_json`); a run that never completes
    (None in the JSON) is sent as infinity."""
    def hours(key: str) -> float:
        return math.inf if o.get(key) is None else float(o[key])

    return placement_pb2.SpotOutlook(
        expected_restarts=hours("expected_restarts"),
        billed_hours=hours("billed_h"),
        completion_hours=hours("completion_h"),
        runtime_hours=float(o["runtime_h"]),
        interruptions_per_hour=float(o["interruptions_per_h"]),
        checkpoint_interval_seconds=float(o.get("checkpoint_interval_s") or 0.0),
        restart_limit=float(o["restart_limit"]),
    )


def _spot_from_proto(m: placement_pb2.SpotOutlook) -> dict[str, Any]:
    def hours(x: float) -> float | None:
        return None if math.isinf(x) else x

    return {
        "expected_restarts": hours(m.expected_restarts),
        "billed_h": hours(m.billed_hours),
        "completion_h": hours(m.completion_hours),
        "runtime_h": m.runtime_hours,
        "interruptions_per_h": m.interruptions_per_hour,
        "checkpoint_interval_s": round(m.checkpoint_interval_seconds) or None,
        "restart_limit": m.restart_limit,
    }


def _scored_to_proto(d: Mapping[str, Any]) -> placement_pb2.ScoredOffer:
    msg = _scored_fields(d)
    read = _ts_from_iso(d.get("price_read_at"))
    if read is not None:  # offline explain prints it per offer: the live one must too
        msg.price_read_at.CopyFrom(read)
    return msg


def _scored_fields(d: Mapping[str, Any]) -> placement_pb2.ScoredOffer:
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
        passed_over=d.get("passed_over") or "",
        capacity_unknown=bool(d.get("capacity_unknown")),
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
        "expected_wait_s": None if m.capacity_unknown else m.expected_wait_seconds,
        "zone": m.zone,
        "region": m.region,
        "allowed": m.allowed,
        "reasons": [{"rule": r.rule, "message": r.message} for r in m.reasons],
        "score": m.score if m.allowed else None,
        "terms": dict(m.terms),
        **({"passed_over": m.passed_over} if m.passed_over else {}),
        **({"capacity_unknown": True} if m.capacity_unknown else {}),
        **({"price_read_at": ts_from_proto(m.price_read_at).isoformat()}
           if m.HasField("price_read_at") else {}),
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
        tenant=body.get("tenant") or "",
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
        "tenant": msg.tenant or None,
    }


def offers_to_proto(
    verdicts: Sequence[OfferVerdict], tenant: str, currency: str, policy_hash: str,
    capacity_unknown: Collection[str] = (),
) -> broker_service_pb2.ListOffersResponse:
    """`szb offers`: each offer with its price (own and policy currency) and verdict; the offers
    keyed in `capacity_unknown` have no live reading of their free units."""
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
            capacity_unknown=o.key in capacity_unknown,
        )
        if o.free is not None:
            row.free = o.free
        resp.offers.append(row)
    return resp
