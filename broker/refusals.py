"""Submissions refused by policy at the door (no allowed offer): their log line and audit record.

Nothing of such a job is stored as a job, so no event tells of it; for an export-control broker
the refused attempts are the compliance record ("who tried to run what where, and which rule
stopped it"), so each is logged (`event=rejected`) and kept in the store's audit trail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from datetime import datetime

from broker.logs import redact_data
from broker.model import TenantId
from broker.store import RefusedSubmission, Submission

log = logging.getLogger("broker.submit")


def rule_ids(reasons: Sequence[str]) -> tuple[str, ...]:
    """The rule ids of admission reasons (each reads `rule.id: why`)."""
    return tuple(sorted({r.split(":", 1)[0] for r in reasons}))


def refusal_record(
    tenant: TenantId, item: Submission, reasons: Sequence[str], version: str, now: datetime,
    *, with_call: str | None = None,
) -> RefusedSubmission:
    """The audit record of one refused item; `version` is `Policy.version` ("hash:inputs").
    `with_call`: the item itself is placeable, refused only with the call's refused item (named)."""
    spec = redact_data(item.spec.model_dump(mode="json"))
    message = (
        f"job {item.spec.name!r} refused: no allowed offer: {'; '.join(reasons)}" if with_call is None
        else f"job {item.spec.name!r} refused with its call: {with_call}"
    )
    return RefusedSubmission(
        time=now,
        tenant=tenant,
        by=item.by,
        role=item.role,
        job_name=item.spec.name,
        message=message,
        rules=rule_ids(reasons) if with_call is None else (),
        policy_hash=version.split(":", 1)[0],
        spec=json.dumps(spec, ensure_ascii=False, sort_keys=True),
    )


def log_refusal(refusal: RefusedSubmission, reasons: Sequence[str]) -> None:
    """The `rejected` log line of one refused item (the logs redact it on the way out)."""
    log.info(
        "submission refused: no allowed offer: %s",
        "; ".join(reasons),
        extra={
            "event": "rejected",
            "job_name": refusal.job_name,
            "tenant": refusal.tenant,
            "by": refusal.by,
            "rules": list(refusal.rules),
            "policy_hash": refusal.policy_hash[:12],
        },
    )


def call_refusals(
    tenant: TenantId,
    refused: Sequence[tuple[int, Submission, Sequence[str]]],
    items: Sequence[Submission],
    version: str,
    now: datetime,
    stored: Collection[int] = (),
) -> list[RefusedSubmission]:
    """The audit records of a refused call, each refused item logged: every other item of the call
    first, refused with it (a call is all or nothing; `stored`: items a resend names that are
    stored already, not refused), then those no offer can take. Written in this order, the items
    that caused the refusal are the newest: the first a listing shows, the last the per-tenant
    cap prunes (it prunes the oldest), so a replay never reads a call's rest without its cause."""
    refusals = [refusal_record(tenant, item, reasons, version, now) for _, item, reasons in refused]
    for record, (_, _, reasons) in zip(refusals, refused, strict=True):
        log_refusal(record, reasons)
    first, bad = refused[0][0], {index for index, _, _ in refused}
    call = f"requests[{first}] ({items[first].spec.name!r}) has no allowed offer"
    mates = [
        refusal_record(tenant, item, (), version, now, with_call=call)
        for index, item in enumerate(items) if index not in bad and index not in stored
    ]
    return mates + refusals
