"""JSON and wire forms of a burst decision (the serde side of `broker.decision`).

The decision core returns typed, frozen values; only this module turns them into the dict
recorded on job events and shown by `szb explain`, and back (`facts_from_json`), and through
the typed proto (`broker.serde.decision_to_proto` / `decision_from_proto`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from broker.api import placement_pb2
from broker.burst.spot import checkpoint_h, interruption_rate, offer_outlook, restarts_text, spot_refusal
from broker.decision import Decision, DecisionFacts, ReclaimVictim
from broker.durations import format_duration
from broker.model import JobSpec, Offer
from broker.placement import HARDWARE_PREFIX, Explanation, ScoredOffer, rejection_counts
from broker.policy import Policy
from broker.serde import decision_from_proto, decision_to_proto

_TIMES = ("burst_pending_since",)
_FACTS = tuple(f.name for f in fields(DecisionFacts))


def facts_json(facts: DecisionFacts) -> dict[str, Any]:
    """The facts that are set (None left out), datetimes as ISO 8601."""
    out: dict[str, Any] = {}
    for name in _FACTS:
        value = getattr(facts, name)
        if value is None:
            continue
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def facts_from_json(data: dict[str, Any]) -> DecisionFacts:
    """The typed facts back from `facts_json` (unknown keys ignored)."""
    kw: dict[str, Any] = {}
    for name in _FACTS:
        value = data.get(name)
        if value is None:
            continue
        kw[name] = datetime.fromisoformat(value) if name in _TIMES and isinstance(value, str) else value
    if "currency" in kw:
        kw["currency"] = str(kw["currency"])
    return DecisionFacts(**kw)


def decision_data(decision: Decision) -> dict[str, Any]:
    """The numbers behind a decision as recorded on the job's event (the pre-typed `data`).

    `currency` labels every money figure (the policy's); the offer's price keeps its own
    currency next to it. Fair-share standing and reclaim victims are added when present.
    The reasons go with the numbers: a burst's placed event is the only record of why it burst.
    """
    data = facts_json(decision.facts)
    data["action"] = decision.action.value
    data["burst"] = decision.burst
    data["reasons"] = list(decision.reasons)
    offer = decision.offer
    if offer is not None:
        data["offer_key"] = offer.key
        data["price_per_hour"] = offer.price_per_hour
        data["price_currency"] = offer.currency
        data["price_read_at"] = offer.price_read_at.isoformat() if offer.price_read_at else None
    fair = decision.fair_share
    if fair is not None:
        data["fair_share"] = {
            "position": fair.position,
            **({"tenant_position": fair.tenant_position} if fair.tenant_position is not None else {}),
            "in_quota": fair.in_quota,
            "share_ratio": fair.share_ratio,
            "standing": fair.standing,
        }
    if decision.reclaim:
        data["reclaim"] = reclaim_json(decision)
    note = decision.projection
    if note is not None:
        data["projection"] = {
            "partition": note.partition,
            "wait_s": note.wait_s,
            "free_units": note.free_units,
            "running": [{"units": u, "ends_in_s": s} for u, s in note.running],
            "running_jobs": note.running_jobs,
            "backend_queue_jobs": note.backend_queue_jobs,
            "queue_ahead_jobs": note.ahead_jobs,
            "queue_ahead_units": note.ahead_units,
            "queue_ahead_unit_hours": note.ahead_unit_hours,
            "runtime_ratio": note.runtime_ratio,
        }
    return data


def reclaim_json(decision: Decision) -> list[dict[str, Any]]:
    """The borrowed attempts fair share asks to preempt for this job."""
    return [victim_json(v) for v in decision.reclaim]


def victim_json(v: ReclaimVictim) -> dict[str, Any]:
    """One borrowed attempt to preempt, as the dispatcher's preemption reads it."""
    return {"attempt": v.attempt, "tenant": v.tenant, "units": v.units, **({"why": v.why} if v.why else {}),
            **({"lost_unit_s": round(v.lost_unit_s, 3)} if v.lost_unit_s else {})}


def decision_proto(decision: Decision) -> placement_pb2.Decision:
    """The typed wire form of a decision."""
    return decision_to_proto(decision_data(decision))


def facts_from_proto(msg: placement_pb2.Decision) -> DecisionFacts:
    """The typed facts back from the wire form."""
    return facts_from_json(decision_from_proto(msg))


def explain_json(
    decision: Decision, spec: JobSpec | None = None, policy: Policy | None = None,
    unread: Collection[str] = (),
) -> dict[str, Any]:
    """The explanation as the decision sees it: `chosen` is the decision's offer (run, burst
    or wait there), offers are listed decision first, then allowed, then rejected with the
    rules that block the job before hardware misfits; `rejections` counts offers per rule.
    With the job and policy, a spot offer's outlook is known: the decision's, and why a better
    scored spot offer was passed over (`passed_over` on each allowed offer the decision did not take).
    Offers keyed in `unread` have no live reading: `capacity_unknown`, and no wait (None)."""
    expl: Explanation | None = decision.explanation
    if expl is None:
        body: dict[str, Any] = {"chosen": None, "offers": [], "policy_hash": decision.policy_hash}
        body["rejections"], body["allowed_offers"] = [], 0
    else:
        body = expl.to_json()
        body["placement_best"] = body["chosen"]
        picked = None
        if decision.offer is not None:
            picked = next((s for s in expl.offers if s.offer.key == decision.offer.key), None)
        ordered = sorted(
            expl.offers,
            key=lambda s: (s is not picked, not s.allowed, _is_misfit(s)),
        )
        body["chosen"] = _unread(expl.offer_json(picked), picked, unread) if picked is not None else None
        body["offers"] = [
            _unread(_with_passed_over(expl.offer_json(s), s, picked, decision, spec, policy), s, unread)
            for s in ordered
        ]
        body["rejections"] = [
            {"rule": rule, "offers": n, "message": message} for rule, n, message in rejection_counts(expl)
        ]
        body["allowed_offers"] = len(expl.allowed)
    body["decision"] = {
        "action": decision.action.value,
        "burst": decision.burst,
        "reasons": list(decision.reasons),
        **decision_data(decision),
    }
    if spec is not None and policy is not None:
        body["decision"].update(spot_data(decision, spec, policy))
    return body


def _unread(body: dict[str, Any], scored: ScoredOffer, unread: Collection[str]) -> dict[str, Any]:
    if scored.offer.key in unread:  # (its static offer's wait, 0, is made up)
        body.update(capacity_unknown=True, expected_wait_s=None)
    return body


def spot_data(decision: Decision, spec: JobSpec, policy: Policy) -> dict[str, Any]:
    """`{"spot_outlook": ...}` when the decision puts the job on spot (its placed event keeps it)."""
    offer = decision.offer
    if offer is None or not offer.spot:
        return {}
    return {"spot_outlook": spot_outlook_json(offer, spec, policy)}


def spot_outlook_json(offer: Offer, spec: JobSpec, policy: Policy) -> dict[str, Any]:
    """What running `spec` on spot `offer` is expected to take (`broker.burst.spot`'s model)."""
    out = offer_outlook(spec, offer, policy)
    every = checkpoint_h(spec)
    return {
        "expected_restarts": _finite(out.restarts),
        "billed_h": _finite(out.billed_h),
        "completion_h": _finite(out.completion_h),
        "runtime_h": round(spec.runtime_estimate.total_seconds() / 3600, 4),
        "interruptions_per_h": interruption_rate(policy, offer.site) * spec.resources.nodes,  # a gang's
        "checkpoint_interval_s": round(every * 3600) if every is not None else None,
        "restart_limit": policy.burst.spot_max_expected_restarts,
    }


def spot_outlook_text(o: dict[str, Any]) -> str:
    """`spot outlook: 1.2 expected restarts (limit 3; checkpoint: 30m), ...` for a person."""
    return (
        f"spot outlook: {_num(o['expected_restarts'])} expected restarts (limit {o['restart_limit']:g}; "
        f"checkpoint: {_every(o)}), {_num(o['billed_h'])} billed h for {o['runtime_h']:,.1f} h of work, "
        f"completion in {_num(o['completion_h'])} h ({o['interruptions_per_h']:g} interruptions/h)"
    )


def _every(o: dict[str, Any]) -> str:
    every = o.get("checkpoint_interval_s")
    return "none" if not every else format_duration(timedelta(seconds=every))


def _with_passed_over(
    row: dict[str, Any],
    s: ScoredOffer,
    picked: ScoredOffer | None,
    decision: Decision,
    spec: JobSpec | None,
    policy: Policy | None,
) -> dict[str, Any]:
    """`row` with why the decision did not take this allowed offer when it scores better than the
    decision's own (or the decision took none): the refusal the burst decision recorded (or named
    in its reasons when nothing was usable); else, on spot, the spot limits or its expected billed
    hours (ranked below the pick once interruptions are priced); else the decision's own reason
    (free on-prem capacity, a wait within max_wait or cheaper). Not for rejected offers, nor for
    worse-scored ones unless the spot limits refuse them."""
    if not s.allowed or s is picked:
        return row
    refused = dict(decision.passed_over).get(s.offer.key)
    if refused is None:  # nothing usable: the decision's reasons list the refusals, "KEY: why"
        refused = next((r for r in decision.reasons if r.startswith(f"{s.offer.key}: ")), None)
    if refused is not None:
        row["passed_over"] = refused.removeprefix(f"{s.offer.key}: ")
        return row
    worse = picked is not None and s.score >= picked.score - 1e-9
    if s.offer.spot and spec is not None and policy is not None and decision.explanation is not None:
        # Worse-scored ones too: an offer over the spot limits is no choice, whatever its score says.
        left = None if spec.deadline is None else spec.deadline - decision.explanation.decided_at
        slack_h = None if left is None else left.total_seconds() / 3600  # as the decision saw it
        seen = decision.projection  # (the stretch the decision judged spot on, where it had one)
        why = spot_refusal(spec, s.offer, policy, slack_h=slack_h, ratio=seen.runtime_ratio if seen else 1.0)
        if why is not None:
            row["passed_over"] = why.removeprefix(f"{s.offer.key}: ")
            return row
        if not worse and decision.burst:
            o = spot_outlook_json(s.offer, spec, policy)
            row["passed_over"] = (
                f"spot expects {restarts_text(o['expected_restarts'])} restarts (checkpoint: {_every(o)}): "
                f"{_num(o['billed_h'])} billed h for {o['runtime_h']:,.1f} h of work cost more than "
                "the decision's offer"
            )
            return row
    if worse:
        return row
    if decision.reasons:
        row["passed_over"] = f"the decision: {decision.reasons[0]}"
    return row


def _finite(x: float) -> float | None:
    """Rounded; None for a run that never completes (inf)."""
    return None if math.isinf(x) else round(x, 4)


def _num(x: float | None) -> str:
    return restarts_text(x)  # (hours too: a number past a million reads as a typo in full)


def _is_misfit(scored: ScoredOffer) -> bool:
    return not scored.allowed and all(r.rule.startswith(HARDWARE_PREFIX) for r in scored.reasons)
