"""gRPC edge: map requests to domain calls and typed errors to statuses. Nothing else."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import grpc

from broker.api import (
    broker_service_pb2,
    broker_service_pb2_grpc,
    job_pb2,
    placement_pb2,
)
from broker.audit import AuditTrail, BadHashError
from broker.audit_page import BadPageTokenError
from broker.auth import AuthError, Principal, TokenAuthority
from broker.drain_rpcs import DrainRpcs, drains_proto
from broker.drains import SiteDrains
from broker.model import Job, JobSpec, JobState, TenantId
from broker.page_tokens import bind, filters_print, job_list_print, unbind
from broker.peer_uid import UNKNOWN_UID, local_peer_uid
from broker.rpc_errors import DOMAIN, ERROR_REASONS, _BadRequest, abort_with, bad_request, error_reason
from broker.rpc_fields import (
    MAX_ACCELERATOR_FILTERS,
    PAGE_TOKEN,
    bounded_field,
    checked_job_id,
    label_filters,
    report_time,
)
from broker.serde import (
    MAX_ANSWER_BYTES,
    WireValueError,
    event_to_proto,
    job_to_proto,
    state_from_proto,
    within_answer,
)
from broker.service import (
    BrokerServices,
    JobNotQueuedError,
    PermissionDeniedError,
)
from broker.submit import VetFn, wire_spec
from broker.validation import FieldViolation

__all__ = ["DOMAIN", "ERROR_REASONS", "BrokerServicer", "abort_with", "bad_request", "error_reason"]

log = logging.getLogger(__name__)

ExplainFn = Callable[[JobSpec, Principal, str, Job | None], Awaitable[placement_pb2.Explanation]]
SpendFn = Callable[[Principal, broker_service_pb2.GetSpendRequest], broker_service_pb2.GetSpendResponse]
StatusFn = Callable[[Principal], Awaitable[broker_service_pb2.GetStatusResponse]]
OffersFn = Callable[
    [Principal, broker_service_pb2.ListOffersRequest], Awaitable[broker_service_pb2.ListOffersResponse]
]


class BrokerServicer(DrainRpcs, broker_service_pb2_grpc.BrokerServiceServicer):
    def __init__(
        self,
        services: BrokerServices,
        auth: TokenAuthority,
        *,
        explain: ExplainFn | None = None,
        spend: SpendFn | None = None,
        status: StatusFn | None = None,
        audit: AuditTrail | None = None,
        vet: VetFn | None = None,
        offers: OffersFn | None = None,
        drains: SiteDrains | None = None,
    ) -> None:
        self.vet, self.drains = vet, drains
        self.offers = offers
        self.services = services
        self.auth = auth
        self.explain = explain
        self.spend = spend
        self._status = status
        self.audit = audit

    def _principal(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        """The authenticated caller (tenant, role, name); AuthError otherwise."""
        pairs = [(k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)]
        if sum(1 for k, _ in pairs if k == "authorization") > 1:  # which one would be the caller?
            raise AuthError("more than one authorization header: send one")
        metadata = dict(pairs)
        client_cn = None
        if self.auth.uses_certificates:
            # Present only when mutual TLS verified the caller's certificate.
            names = list(context.auth_context().get("x509_common_name") or ())
            client_cn = names[0].decode(errors="replace") if names else None
        principal = self.auth.principal_for(metadata, client_cn=client_cn)
        uid = local_peer_uid(context.peer() or "") if self.auth.dev_mode else None
        if uid == UNKNOWN_UID:
            raise AuthError("without a tokens file only the broker's own user may call it; this "
                            "caller's connection is not in the kernel's socket table (see Security model)")
        if uid not in (None, 0, os.getuid()):
            # (`broker.peer_uid`: a job of this host, under its private uid, is not the dev user)
            raise AuthError(
                f"without a tokens file only the broker's own user may call it; this caller runs as "
                f"uid {uid} (a job's?): give the broker a tokens file (see Security model)"
            )
        return principal

    def _reader(self, context: grpc.aio.ServicerContext[Any, Any], call: str, cost: int = 1) -> Principal:
        """The caller of a read, its read tokens taken (an operator's are not counted: dashboards);
        one tenant's flood of explains must not take the CPU every other tenant shares."""
        caller = self._principal(context)
        if not caller.is_operator and self.services.quotas is not None:
            self.services.quotas.admit_read(caller.tenant, call, cost)
        return caller

    def _still(self, context: grpc.aio.ServicerContext[Any, Any], caller: Principal) -> None:
        """Before each item of a stream: a token revoked (or moved) since it opened ends it."""
        if self._principal(context) != caller:
            raise AuthError("this stream's credentials changed since it was opened")

    def _tenant(self, context: grpc.aio.ServicerContext[Any, Any]) -> TenantId:
        return self._principal(context).tenant

    async def SubmitJob(
        self, request: broker_service_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.SubmitJobResponse:
        try:
            caller = self._principal(context)
            return await self.services.submitter.submit_job(
                caller.tenant, request, self.vet, by=(caller.name, caller.role.value)
            )
        except Exception as exc:
            await abort_with(context, exc)

    async def SubmitJobs(
        self, request: broker_service_pb2.SubmitJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.SubmitJobsResponse:
        try:
            caller = self._principal(context)
            return await self.services.submitter.submit_jobs(
                caller.tenant, request, self.vet, by=(caller.name, caller.role.value)
            )
        except Exception as exc:
            await abort_with(context, exc)

    async def GetJob(
        self, request: broker_service_pb2.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.GetJobResponse:
        try:
            caller = self._reader(context, "GetJob")
            job = self.services.get(caller, checked_job_id(request.id))
            if job.state == JobState.QUEUED and await self.services.dispatcher.follow_queue():
                job = self.services.get(caller, job.id)  # (why it waits, as of now)
            return broker_service_pb2.GetJobResponse(job=job_to_proto(job, None, self.services.details(job)))
        except Exception as exc:
            await abort_with(context, exc)

    async def ListJobs(
        self, request: broker_service_pb2.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.ListJobsResponse:
        try:
            caller = self._reader(context, "ListJobs")
            if request.page_size < 0:
                raise _BadRequest([FieldViolation("page_size", "must be >= 0")])
            try:
                states = sorted({state_from_proto(s) for s in request.states})
            except WireValueError as exc:
                raise _BadRequest([FieldViolation("states", "unknown job state")]) from exc
            bounded_field(request.tenant, "tenant")
            labels = label_filters(request.labels)
            printed = job_list_print(request.tenant, states, labels)
            try:
                after = unbind(request.page_token, printed, PAGE_TOKEN) if request.page_token else ""
            except BadPageTokenError as exc:
                raise _BadRequest([FieldViolation("page_token", str(exc))]) from exc
            if not states or JobState.QUEUED in states:
                await self.services.dispatcher.follow_queue()  # (why queued jobs wait, as of now)
            page = self.services.list(
                caller,
                tenant=request.tenant,
                states=states,
                labels=labels,
                page_size=request.page_size,
                page_token=after,
            )
            jobs: list[job_pb2.Job] = []
            size = 0
            for j, details in zip(page.jobs, self.services.details_many(page.jobs), strict=True):
                msg = within_answer(job_to_proto(j, None, details))  # one alone may be too large
                size += msg.ByteSize()
                if jobs and size > MAX_ANSWER_BYTES:
                    # A page of large specs would outgrow the message limit: stop, and say where
                    # the next page starts.
                    token = bind(jobs[-1].id, printed)
                    return broker_service_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)
                jobs.append(msg)
            token = bind(page.next_page_token, printed)
            return broker_service_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)
        except Exception as exc:
            await abort_with(context, exc)

    async def CancelJob(
        self, request: broker_service_pb2.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.CancelJobResponse:
        try:
            job = await self.services.cancel(self._principal(context), checked_job_id(request.id))
            details = self.services.details(job)
            return broker_service_pb2.CancelJobResponse(job=within_answer(job_to_proto(job, None, details)))
        except Exception as exc:
            await abort_with(context, exc)

    async def WatchJob(
        self, request: broker_service_pb2.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[broker_service_pb2.WatchJobResponse]:
        try:
            caller = self._reader(context, "WatchJob")
            if request.after_seq < 0:
                raise _BadRequest([FieldViolation("after_seq", "must be >= 0")])
            job_id = checked_job_id(request.id)
        except Exception as exc:
            await abort_with(context, exc)
        try:
            # Closed here, not whenever it is collected: it holds one of the tenant's stream slots.
            async with aclosing(self.services.watch(caller, job_id, request.after_seq)) as events:
                async for event in events:
                    self._still(context, caller)
                    yield broker_service_pb2.WatchJobResponse(event=event_to_proto(event))
        except Exception as exc:
            await abort_with(context, exc)

    async def ExplainPlacement(
        self, request: broker_service_pb2.ExplainPlacementRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.ExplainPlacementResponse:
        try:
            caller = self._reader(context, "ExplainPlacement", 10)
            bounded_field(request.tenant, "tenant")
            if request.job_id:
                return await self._explain_job(request, caller)
            # The spec a submission may carry, no larger (a 28 MB spec was decoded and placed).
            self.services.submitter.check_spec_bytes(caller.tenant, request.job.ByteSize(), "job")
            spec = wire_spec(request.job, "job", self.vet)
            if self.explain is None:
                return broker_service_pb2.ExplainPlacementResponse()
            explanation = await self.explain(spec, caller, request.tenant, None)
            return broker_service_pb2.ExplainPlacementResponse(explanation=explanation)
        except Exception as exc:
            await abort_with(context, exc)

    async def _explain_job(
        self, request: broker_service_pb2.ExplainPlacementRequest, caller: Principal
    ) -> broker_service_pb2.ExplainPlacementResponse:
        """A queued job, explained where it stands (NOT_FOUND for another tenant's, as `get`)."""
        if request.HasField("job") or request.tenant:
            raise _BadRequest([FieldViolation("job_id", "give a job_id, or a job (and tenant): not both")])
        job = self.services.get(caller, bounded_field(request.job_id, "job_id"))
        if job.state != JobState.QUEUED:
            raise JobNotQueuedError(
                f"job {job.id} is {job.state.value}: explain answers for a queued job "
                "(szb get shows its placement)"
            )
        if self.explain is None:
            return broker_service_pb2.ExplainPlacementResponse()
        explanation = await self.explain(job.spec, caller, job.tenant, job)
        return broker_service_pb2.ExplainPlacementResponse(explanation=explanation)

    async def GetSpend(
        self, request: broker_service_pb2.GetSpendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.GetSpendResponse:
        try:
            caller = self._reader(context, "GetSpend")
            since, until = report_time(request, "since"), report_time(request, "until")
            if since is not None and until is not None and until <= since:
                raise _BadRequest([FieldViolation("until", "must be after since")])
            if request.group_by not in broker_service_pb2.SpendGrouping.values():
                raise _BadRequest([FieldViolation("group_by", "unknown enum value")])
            bounded_field(request.tenant, "tenant")
            if self.spend is None:
                return broker_service_pb2.GetSpendResponse()
            return self.spend(caller, request)
        except Exception as exc:
            await abort_with(context, exc)

    async def GetStatus(
        self, request: broker_service_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.GetStatusResponse:
        try:
            caller = self._reader(context, "GetStatus", 10)
            if self._status is None:
                counts = self.services.status(None if caller.is_operator else caller.tenant)["jobs_by_state"]
                return broker_service_pb2.GetStatusResponse(jobs_by_state=counts)
            status = await self._status(caller)
            status.drains.extend(drains_proto(self.drains))  # (a tenant's job may wait on one)
            return status
        except Exception as exc:
            await abort_with(context, exc)

    async def StreamJobLogs(
        self, request: broker_service_pb2.StreamJobLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[broker_service_pb2.StreamJobLogsResponse]:
        try:
            caller = self._reader(context, "StreamJobLogs", 10)
            if request.tail_bytes < 0:
                raise _BadRequest([FieldViolation("tail_bytes", "must be >= 0")])
            stream = self.services.logs(
                caller, checked_job_id(request.id), follow=request.follow, tail_bytes=request.tail_bytes
            )
            async with aclosing(stream):
                async for piece in stream:
                    self._still(context, caller)
                    yield broker_service_pb2.StreamJobLogsResponse(
                        chunk=job_pb2.LogChunk(
                            offset=piece.offset, data=piece.data, attempt_id=piece.attempt_id
                        )
                    )
        except Exception as exc:
            await abort_with(context, exc)

    async def ListOffers(
        self, request: broker_service_pb2.ListOffersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.ListOffersResponse:
        try:
            caller = self._reader(context, "ListOffers", 10)
            bounded_field(request.tenant, "tenant")
            if len(request.accelerators) > MAX_ACCELERATOR_FILTERS:
                why = f"at most {MAX_ACCELERATOR_FILTERS} names"
                raise _BadRequest([FieldViolation("accelerators", why)])
            for i, name in enumerate(request.accelerators):
                bounded_field(name, f"accelerators[{i}]")
            if self.offers is None:
                return broker_service_pb2.ListOffersResponse()
            return await self.offers(caller, request)
        except Exception as exc:
            await abort_with(context, exc)

    def _audit(
        self, context: grpc.aio.ServicerContext[Any, Any], what: str = "the audit trail"
    ) -> AuditTrail:
        """The audit trail, for operators only (tenants get PERMISSION_DENIED naming `what` they asked)."""
        if not self._principal(context).is_operator:
            raise PermissionDeniedError(f"only operators may read {what}")
        if self.audit is None:
            raise PermissionDeniedError(f"this broker keeps no audit trail, so not {what} either")
        return self.audit

    async def ListPolicyVersions(
        self,
        request: broker_service_pb2.ListPolicyVersionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_service_pb2.ListPolicyVersionsResponse:
        try:
            audit = self._audit(context, "the policy history")
            if request.page_size < 0:
                raise _BadRequest([FieldViolation("page_size", "must be >= 0")])
            return audit.versions(request.page_size)
        except Exception as exc:
            await abort_with(context, exc)

    async def GetPolicyVersion(
        self, request: broker_service_pb2.GetPolicyVersionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.GetPolicyVersionResponse:
        try:
            audit = self._audit(context, "the policy history")
            try:
                return audit.version(request.hash)
            except BadHashError as exc:
                raise _BadRequest([FieldViolation("hash", str(exc))]) from exc
        except Exception as exc:
            await abort_with(context, exc)

    async def ListAuditEvents(
        self, request: broker_service_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_service_pb2.ListAuditEventsResponse:
        try:
            audit = self._audit(context)
            if request.page_size < 0:
                raise _BadRequest([FieldViolation("page_size", "must be >= 0")])
            bounded_field(request.job_id, "job_id")
            bounded_field(request.tenant, "tenant")
            since, until = report_time(request, "since"), report_time(request, "until")
            if since is not None and until is not None and until <= since:
                raise _BadRequest([FieldViolation("until", "must be after since")])
            # (not since/until: the CLI sends `--since 1h` as of each call; the cursor is a time anyway)
            printed = filters_print(request.job_id, request.tenant)
            try:
                after = unbind(request.page_token, printed) if request.page_token else ""
                got = audit.events(
                    job_id=request.job_id, tenant=request.tenant, since=since, page_size=request.page_size,
                    until=until, page_token=after,
                )
            except BadPageTokenError as exc:
                raise _BadRequest([FieldViolation("page_token", str(exc))]) from exc
            got.next_page_token = bind(got.next_page_token, printed)
            return got
        except Exception as exc:
            await abort_with(context, exc)
