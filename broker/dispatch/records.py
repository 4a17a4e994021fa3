"""What dispatch writes about a decision: log fields, audit data, and which errors are the offer's."""

from __future__ import annotations

import re
from typing import Any

from broker.decision import Action, Decision
from broker.model import Job
from broker.placement import rejection_summary

_DIGITS = re.compile(r"[\d.]+")


def gist(message: str) -> str:
    """A message's wording without its numbers: a job's waiting reason is recorded again (a new
    event) only when this changes."""
    return _DIGITS.sub("#", message)


def decision_fields(job: Job, decision: Decision, event: str) -> dict[str, Any]:
    """The structured fields of a decision's log line: job, tenant, site, rule ids, policy."""
    rules: list[str] = []
    if decision.explanation is not None and decision.action != Action.RUN:
        rules = sorted({r.rule for r in rejection_summary(decision.explanation)})[:20]
    offer = decision.offer
    return {
        "event": event,
        "job_id": job.id,
        "tenant": job.tenant,
        "site": offer.site if offer is not None else None,
        "offer": offer.key if offer is not None else None,
        "action": decision.action.value,
        "rules": rules,
        "policy_hash": decision.policy_hash[:12],
    }


def audit_data(decision: Decision) -> dict[str, Any]:
    """What the audit trail keeps with a decision's event: the policy and the deciding rules."""
    rules: list[str] = []
    if decision.explanation is not None and decision.action != Action.RUN:
        rules = sorted({r.rule for r in rejection_summary(decision.explanation)})
    return {"policy_hash": decision.policy_hash, "rules": rules}


def offer_fault(error: str) -> bool:
    """A stored attempt error that was the offer's fault (it does not use up one of the job's attempts)."""
    return error.startswith(
        ("CapacityError", "QuotaError", "SpotQuotaError", "UnsupportedError", "AuthError", "ConfigError")
    )
