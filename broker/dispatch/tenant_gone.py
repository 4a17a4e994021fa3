"""A queued job whose tenant the policy in force no longer declares waits; it is not failed.

A reload that drops a tenant (a slip in the tenants list, or a tenant being re-declared) would
otherwise see every offer refused as `policy.tenant` and fail the tenant's stored work for
good. New submissions of such a tenant stay refused at the door (`FAILED_PRECONDITION`).
"""

from __future__ import annotations

from dataclasses import replace

from broker.decision import Action, Decision
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
