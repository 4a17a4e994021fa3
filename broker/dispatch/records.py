"""What dispatch writes about a decision: log fields, audit data, and which errors are the offer's."""

from __future__ import annotations

import logging
import re
from typing import Any

from broker.decision import Action, Decision
from broker.metrics import BrokerMetrics
from broker.model import Attempt, AttemptState, AttemptStatus, Job
from broker.placement import rejection_summary

_DIGITS = re.compile(r"[\d.]+")


def gist(message: str) -> str:
    """A message's wording without its numbers: a job's waiting reason is recorded again (a new
    event) only when this changes."""
    return _DIGITS.sub("#", message)


def decision_fields(job: Job, decision: Decision, event: str) -> dict[str, Any]:
    """The structured fields of a decision's log line: job, tenant, site, rule ids, policy."""
    rules = deciding_rules(decision)[:20]
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
    return {"policy_hash": decision.policy_hash, "rules": deciding_rules(decision)}


BURST = " [burst]"
"""What marks a burst's placed, attempt and running messages (`burst_said`)."""


def burst_said(decision: Decision) -> str:
    """' [burst]: why' for a burst (its reasons, which no later view could rebuild), else ''."""
    if not decision.burst:
        return ""
    return f"{BURST}: {decision.summary}" if decision.summary else BURST


def running_said(job: Job, attempt: Attempt) -> str:
    """'running on SITE', keeping why a burst was made when the job's message (its attempt's,
    from `_attempt_message`) says so: `szb get` of a running burst then still says why."""
    started = f"attempt {attempt.number} on {attempt.site}"
    said = f"running on {attempt.site}"
    return said + job.message.removeprefix(started) if job.message.startswith(started + BURST) else said


DEADLINE = "deadline"
"""The rule id a refusal past a job's latest start (deadline − runtime) is recorded under."""


def deciding_rules(decision: Decision) -> list[str]:
    """The rule ids behind a decision that does not run the job (none for a wait with offers
    allowed: capacity, not a rule, keeps it): those rejecting offers, or the
    deadline where offers were allowed and the job was refused anyway (its latest start passed:
    the rules rejecting other offers, a misfit's `hardware.fit`, were not why)."""
    expl = decision.explanation
    if expl is None or decision.action == Action.RUN:
        return []
    if decision.action == Action.WAIT and expl.allowed:  # it waits for capacity, not for a rule
        return []
    if decision.action == Action.REJECT and expl.unranked:
        return [DEADLINE]
    return sorted({r.rule for r in rejection_summary(expl)})


def offer_fault(error: str) -> bool:
    """A stored attempt error that was the offer's fault (it does not use up one of the job's attempts)."""
    return error.startswith(
        ("CapacityError", "QuotaError", "SpotQuotaError", "UnsupportedError", "AuthError", "ConfigError",
         "RequestError")  # (a refusal of the job's own request: no site ran it)
    )


def used_an_attempt(attempt: Attempt) -> bool:
    """An ended attempt that counts against the job's `max_attempts`: not the offer's refusal, not
    a preemption (a reclaim or a spot interruption: spot's own limit counts those) and not the
    broker's own doing (its downtime, a withdrawal)."""
    return (
        attempt.state.terminal
        and attempt.state != AttemptState.PREEMPTED
        and not attempt.broker_side
        and not offer_fault(attempt.error)
    )


def log_attempt_end(log: logging.Logger, job: Job, attempt: Attempt, status: AttemptStatus) -> None:
    """The one log line of an attempt's end (a poll's, an agent's or a cancel's): its state, exit
    code and error, as structured fields too."""
    log.log(
        logging.INFO if status.state in (AttemptState.SUCCEEDED, AttemptState.CANCELLED) else logging.WARNING,
        "attempt %d on %s ended %s%s", attempt.number, attempt.site, status.state.value,
        f": {status.message}" if status.message else "",
        extra={
            "event": "attempt",
            "job_id": job.id,
            "tenant": job.tenant,
            "site": attempt.site,
            "attempt_id": attempt.id,
            "state": status.state.value,
            "exit_code": status.exit_code,
            "error": status.message or None,
        },
    )


def failover_said(
    log: logging.Logger, metrics: BrokerMetrics, job: Job, attempt: Attempt, text: str, detail: str,
    *, error: str, label: str, event: str = "failover", **fields: Any,
) -> None:
    """The log line of an attempt that failed or was lost (`text` formats its number, offer key and
    `detail`), and, when its job moved on elsewhere (a `failover` event), the failover metric."""
    if event == "failover":
        metrics.failovers.labels(attempt.site, label).inc()
    log.warning(
        text, attempt.number, attempt.offer.key, detail,
        extra={"event": event, "job_id": job.id, "tenant": job.tenant, "site": attempt.site,
               "attempt_id": attempt.id, "offer": attempt.offer.key, "error": error, **fields},
    )
