"""A queued job the policy in force can no longer place waits; it is not failed.

Submission refuses a job no offer allows, so a queued job the dispatcher would reject was taken
under another policy. A reload that drops a tenant (a slip in the tenants list, or a tenant
being re-declared) would see every offer refused as `policy.tenant`, and one that drops a
partition or a site's catalog row (a typo in a routine edit) would fail every queued job that
needs it, for good; Slurm keeps such jobs pending with a reason. New submissions stay refused
at the door (`FAILED_PRECONDITION`); a job past its deadline's latest start still fails.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from broker.burst.inputs import deadline_missed
from broker.decision import Action, Decision
from broker.model import JobSpec
from broker.policy import Policy


def kept_while_undeclared(policy: Policy, tenant: str, decision: Decision) -> Decision:
    """`decision`, or a wait saying why when it rejects the job of a tenant `policy` lacks."""
    if decision.action != Action.REJECT or policy.tenant(tenant) is not None:
        return decision
    why = (
        f"tenant {tenant} is not declared in the policy in force ({policy.hash[:12]}): the job "
        "waits until a policy declares it again, or is cancelled"
    )
    return replace(decision, action=Action.WAIT, reasons=(why,))


def kept_while_unplaceable(policy: Policy, spec: JobSpec, decision: Decision, now: datetime) -> Decision:
    """`decision`, or a wait saying why when it rejects a queued job no offer of `policy` allows."""
    if decision.action != Action.REJECT or deadline_missed(spec, now) is not None:
        return decision
    why = (
        f"no offer of the policy in force ({policy.hash[:12]}) allows the job any more: it waits "
        "for a policy that does, or is cancelled"
    )
    return replace(decision, action=Action.WAIT, reasons=(why, *decision.reasons))


def kept_waiting(policy: Policy, tenant: str, spec: JobSpec, decision: Decision, now: datetime) -> Decision:
    """A queued job's decision under the policy in force: a rejection only for a missed deadline."""
    return kept_while_unplaceable(policy, spec, kept_while_undeclared(policy, tenant, decision), now)
