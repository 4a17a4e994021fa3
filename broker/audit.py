"""The operator's audit trail: policy versions loaded or refused, who did what to which job, and
which submissions policy refused at the door.

Reads the store (`policy_versions`, `audit_events`, `refusals`) and turns rows into the API's messages.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import astuple
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from broker.api import broker_service_pb2 as pb
from broker.audit_access import ACCESS_KIND, ACTOR, access_changes
from broker.audit_page import decode, encode
from broker.errors import BrokerError
from broker.model import JobEvent, JobId, TenantId
from broker.policy import Policy
from broker.policy.watcher import PolicyLoad
from broker.serde import state_to_proto
from broker.store import (
    ACCESS,
    ACTION_REFUSED,
    DRAIN,
    DRAINED,
    EVENT,
    MAX_TOKEN_SETS,
    REFUSAL,
    REFUSED,
    REFUSED_ACTION,
    AuditCursor,
    AuditFilter,
    DrainChange,
    JobNotFoundError,
    JobStore,
    PolicyVersion,
    RefusedAction,
    RefusedSubmission,
)
from broker.store._refused_actions import CANCEL
from broker.validation import did_you_mean

DEFAULT_VERSIONS = 50
MAX_VERSIONS = 1000
DEFAULT_EVENTS = 1000
MAX_EVENTS = 10_000
_HEX = re.compile(r"^[0-9a-f]{4,64}$")

_RESULTS = {
    "loaded": pb.POLICY_LOAD_RESULT_LOADED,
    "unchanged": pb.POLICY_LOAD_RESULT_LOADED,
    "refused": pb.POLICY_LOAD_RESULT_REFUSED,
}


class BadHashError(BrokerError, ValueError):
    """Not a policy hash or a prefix of one (4 to 64 lowercase hex digits)."""


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def version_to_proto(
    v: PolicyVersion | PolicyLoad, *, active: str, content: bool = False
) -> pb.PolicyVersion:
    return pb.PolicyVersion(
        hash=v.hash,
        result=_RESULTS.get(v.result, pb.POLICY_LOAD_RESULT_UNSPECIFIED),
        source=v.source,
        time=_ts(v.time),
        errors=list(v.errors),
        content=v.content if content else "",
        active=v.hash == active and v.result != "refused",
        inputs_digest=v.inputs,
        files=[
            pb.PolicyFile(name=name, sha256=hashlib.sha256(text.encode()).hexdigest(),
                          content=text if content else "")
            for name, text in v.files
        ],
    )


def _actor(tenant: TenantId, event: JobEvent) -> str:
    if event.kind in ("submitted", "cancel_requested", "cancel_too_late"):
        return str(event.data.get("by") or tenant)
    if event.kind == "cancelled":  # (one at the backend, `scancel` say, was not the broker's doing)
        return str(event.data.get("by") or ("backend" if "backend" in event.message else tenant))
    return "broker"


def _site(data: dict[str, Any]) -> str:
    offer = data.get("offer")
    if isinstance(offer, dict):
        return str(offer.get("site", ""))
    return str(data.get("site", ""))


def _offer(data: dict[str, Any]) -> str:
    offer = data.get("offer")
    if isinstance(offer, str):
        return offer
    return str(data.get("offer_key", ""))


def event_to_proto(tenant: TenantId, event: JobEvent) -> pb.AuditEvent:
    data = event.data
    price = data.get("price_per_hour")
    return pb.AuditEvent(
        time=_ts(event.time),
        job_id=event.job_id,
        seq=event.seq,
        tenant=tenant,
        kind=event.kind,
        actor=_actor(tenant, event),
        state=state_to_proto(event.state),
        message=event.message,
        policy_hash=str(data.get("policy_hash", "")),
        site=_site(data),
        offer=_offer(data),
        price_per_hour=float(price) if isinstance(price, int | float) else 0.0,
        currency=str(data.get("price_currency") or data.get("currency", "")),  # the price's own
        rule_ids=[str(r) for r in data.get("rules", ())],
    )


def refusal_to_proto(r: RefusedSubmission) -> pb.AuditEvent:
    """A refused submission: no job (empty job_id, no state); its name is in the message."""
    return pb.AuditEvent(
        time=_ts(r.time),
        tenant=r.tenant,
        kind=REFUSED,
        actor=r.by or r.tenant,  # as a `submitted` event names its submitter
        message=r.message,
        policy_hash=r.policy_hash,
        rule_ids=list(r.rules),
    )


def drain_change_to_proto(c: DrainChange) -> pb.AuditEvent:
    """A site drained (or its reason changed) or undrained by an operator: no job, no tenant."""
    why = f": {c.reason}" if c.reason else ""
    message = f"site {c.site} drained{why}"
    if c.action != DRAINED:
        message = f"site {c.site} undrained (was drained{why})"
    return pb.AuditEvent(time=_ts(c.time), kind=c.action, actor=c.by, site=c.site, message=message)


def refused_action_to_proto(a: RefusedAction) -> pb.AuditEvent:
    """A call the broker refused: who (actor, tenant) tried what on which site or job, and why."""
    message = f"{a.action} {a.target} refused ({a.code}): {a.reason}" if a.target else a.reason
    on_job = a.target if a.action == CANCEL else ""
    return pb.AuditEvent(time=_ts(a.time), tenant=a.tenant, kind=ACTION_REFUSED, actor=a.by or a.tenant,
                         job_id=on_job, site="" if on_job else a.target, message=message)


class AuditTrail:
    """The three operator RPCs over one store; `active` and `refused` read the live watcher."""

    def __init__(
        self, store: JobStore, policy: Callable[[], Policy], refused: Callable[[], PolicyLoad | None]
    ) -> None:
        self.store = store
        self.policy = policy
        self.refused = refused

    def active(self) -> str:
        """The hash of the policy in force."""
        return self.policy().hash

    def versions(self, page_size: int) -> pb.ListPolicyVersionsResponse:
        limit = DEFAULT_VERSIONS if page_size <= 0 else min(page_size, MAX_VERSIONS)
        active = self.active()
        versions, seen = [], False
        for v in self.store.policy_versions(limit):  # newest first: only the newest load is in force
            shown = version_to_proto(v, active="" if seen else active)
            seen = seen or shown.active
            versions.append(shown)
        return pb.ListPolicyVersionsResponse(versions=versions, active_hash=active)

    def version(self, prefix: str) -> pb.GetPolicyVersionResponse:
        prefix = prefix.strip().lower()
        if not _HEX.match(prefix):
            raise BadHashError("must be 4 to 64 hex digits of a policy hash")
        found = self.store.find_policy_version(prefix)
        if found is None:
            raise JobNotFoundError(f"no stored policy version {prefix!r}")
        matching = self.store.policy_hashes(prefix, 6)
        if len(matching) > 1:  # (showing one of them would be a guess the caller cannot see)
            raise BadHashError(f"{prefix!r} begins {len(matching)} stored versions' hashes "
                               f"({', '.join(h[:12] for h in matching[:5])}): give more digits")
        return pb.GetPolicyVersionResponse(
            version=version_to_proto(found, active=self.active(), content=True)
        )

    def events(
        self, *, job_id: str, tenant: str, since: datetime | None, page_size: int,
        until: datetime | None = None, page_token: str = "",
    ) -> pb.ListAuditEventsResponse:
        limit = DEFAULT_EVENTS if page_size <= 0 else min(page_size, MAX_EVENTS)
        after = decode(page_token) if page_token else None
        # One beyond the page from each source tells whether older entries match.
        where = AuditFilter(job_id=job_id or None, tenant=tenant or None, since=since, limit=limit + 1,
                            until=until, after=after)
        timed: list[tuple[tuple[datetime, int, str, int], pb.AuditEvent]] = [
            ((e.time, EVENT, e.job_id, e.seq), event_to_proto(t, e))
            for t, e in self.store.audit_events(where)
        ]
        timed += [((r.time, REFUSAL, "", r.id), refusal_to_proto(r)) for r in self.store.refusals(where)]
        timed += self._access(where)
        timed += [((c.time, DRAIN, "", c.id), drain_change_to_proto(c)) for c in self.store.drain_log(where)]
        timed += [((a.time, REFUSED_ACTION, "", a.id), refused_action_to_proto(a))
                  for a in self.store.refused_actions(where)]
        # Each list is its newest, oldest first: merged in the audit's order, the newest `limit`.
        timed.sort(key=lambda pair: pair[0])
        if job_id and not timed and after is None:  # a typo would read as a job with no history
            self.store.get(JobId(job_id))  # NOT_FOUND when there is no such job
        if tenant and not timed and after is None and (policy := self.policy()).tenant(tenant) is None:
            # A typo would read as a quiet tenant; a tenant since removed keeps its history.
            hint = did_you_mean(tenant, [t.id for t in policy.tenants])
            raise JobNotFoundError(f"tenant {tenant!r} is not in the policy and has no audit events{hint}")
        page = timed[-limit:]
        more = len(timed) > limit
        token = encode(AuditCursor(*page[0][0])) if more else ""
        return pb.ListAuditEventsResponse(events=[msg for _, msg in page], next_page_token=token)

    def _access(self, where: AuditFilter) -> list[tuple[tuple[datetime, int, str, int], pb.AuditEvent]]:
        """Tokens added, removed or changed in the window, as audit entries (never a job's)."""
        if where.job_id:
            return []
        sets = self.store.token_sets(where)
        after = astuple(where.after) if where.after is not None else None
        out = []
        for c in access_changes(sets, first_is_baseline=len(sets) > MAX_TOKEN_SETS):
            key = (c.time, ACCESS, "", c.key[0] * 100_000 + c.key[1])
            if (
                (where.tenant and where.tenant not in c.tenants)
                or (where.since is not None and c.time < where.since)
                or (where.until is not None and c.time >= where.until)
                or (after is not None and key >= after)
            ):
                continue
            out.append((key, pb.AuditEvent(
                time=_ts(c.time), tenant=c.tenant, kind=ACCESS_KIND, actor=ACTOR, message=c.message
            )))
        return out[-where.limit:]

    def refused_proto(self) -> pb.PolicyVersion | None:
        refused = self.refused()
        return None if refused is None else version_to_proto(refused, active=self.active())
