"""A small synchronous client for the CLI (and scripts): channel, token, error text."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.errors import BrokerError
from broker.serde import MAX_MESSAGE_BYTES
from broker.tls import client_credentials

DEFAULT_SERVER = "127.0.0.1:50051"
_TOO_LARGE = re.compile(r"Received message larger than max \((\d+) vs\. (\d+)\)")
"""gRPC's refusal of a request over the server's receive limit (sent, received)."""


class ClientError(BrokerError):
    """A call failed; the message lists the server's field violations or reasons."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: Sequence[str], subjects: Sequence[str] = ()
    ) -> None:
        super().__init__("\n".join([message, *details]) if details else message)
        self.code = code
        self.details = list(details)
        self.subjects = list(subjects)
        """What the details are about: a field (`requests[1].job.name`) or subject (`job[1]`)."""


def describe_rpc_error(err: grpc.RpcError) -> ClientError:
    """Unpack google.rpc details (BadRequest, PreconditionFailure) into readable lines."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or code.name
    lines: list[str] = []
    subjects: list[str] = []
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                lines.extend(f"  {v.field}: {v.description}" for v in bad.field_violations)
                subjects.extend(v.field for v in bad.field_violations)
            elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                failure = error_details_pb2.PreconditionFailure()
                detail.Unpack(failure)
                lines.extend(f"  {v.description}" for v in failure.violations)
                subjects.extend(v.subject for v in failure.violations)
    if code == grpc.StatusCode.UNAVAILABLE and "Socket closed" in message:  # (TLS met plaintext)
        lines.append("  (a broker serving TLS closes a plaintext connection: --tls-ca FILE, or SZB_TLS_CA)")
    too_large = _TOO_LARGE.search(message) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    if too_large:
        lines.append(
            f"  (the request is {too_large[1]} bytes; the broker takes requests of at most {too_large[2]}"
            " bytes, from its policy's largest max_spec_bytes (8 MiB of specs at least) plus room for a"
            " batch's client ids: send a smaller job, or fewer jobs per call)"
        )
    return ClientError(code, f"{code.name}: {message}", lines, subjects)


class BrokerClient:
    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        """Plaintext unless a TLS file is given (CA only: verify the server; cert+key: mTLS too)."""
        # A job's spec may be up to the policy's max_spec_bytes (16 MiB at most): its GetJob answer
        # passes the 4 MiB a gRPC client accepts by default.
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if tls_ca or tls_cert or tls_key:
            creds = client_credentials(tls_ca, tls_cert, tls_key)
            self.channel = grpc.secure_channel(server, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(server, options=options)
        self.stub = broker_service_pb2_grpc.BrokerServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, requests: Sequence[pb.SubmitJobRequest]) -> list[pb.SubmitJobResponse]:
        try:
            if len(requests) == 1:
                one = self.stub.SubmitJob(requests[0], metadata=self.metadata, timeout=self.timeout)
                return [self._with_spec(one, requests[0])]
            resp = self.stub.SubmitJobs(
                pb.SubmitJobsRequest(requests=requests), metadata=self.metadata, timeout=self.timeout
            )
            for answer, asked in zip(resp.responses, requests, strict=True):
                self._with_spec(answer, asked)
            return list(resp.responses)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def _with_spec(self, answer: pb.SubmitJobResponse, asked: pb.SubmitJobRequest) -> pb.SubmitJobResponse:
        """`answer` with its job's spec where a large answer left it out: the one sent for a job it
        created, the stored one (GetJob) for one its client id already named."""
        if not answer.job.HasField("spec"):
            spec = asked.job if answer.created else self.get(answer.job.id).job.spec
            answer.job.spec.CopyFrom(spec)
        return answer

    def get(self, job_id: str) -> pb.GetJobResponse:
        try:
            return self.stub.GetJob(pb.GetJobRequest(id=job_id), metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def list(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        try:
            return self.stub.ListJobs(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def cancel(self, job_id: str) -> pb.CancelJobResponse:
        try:
            return self.stub.CancelJob(
                pb.CancelJobRequest(id=job_id), metadata=self.metadata, timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def watch(self, job_id: str, after_seq: int = 0) -> Iterator[pb.WatchJobResponse]:
        """Stream events; reconnects from the last seen seq if the stream breaks."""
        seq = after_seq
        failures = 0
        while True:
            try:
                for resp in self.stub.WatchJob(
                    pb.WatchJobRequest(id=job_id, after_seq=seq), metadata=self.metadata
                ):
                    seq = resp.event.seq
                    failures = 0
                    yield resp
                return
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or failures >= 30:
                    raise describe_rpc_error(err) from err
                failures += 1
                time.sleep(min(2.0, 0.2 * failures))

    def explain(self, request: pb.ExplainPlacementRequest) -> pb.ExplainPlacementResponse:
        try:
            return self.stub.ExplainPlacement(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def spend(self, request: pb.GetSpendRequest | str = "") -> pb.GetSpendResponse:
        """GetSpend; a bare string asks for that tenant's month so far."""
        if isinstance(request, str):
            request = pb.GetSpendRequest(tenant=request)
        try:
            return self.stub.GetSpend(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def logs(
        self, job_id: str, *, follow: bool = False, tail_bytes: int = 0
    ) -> Iterator[pb.StreamJobLogsResponse]:
        """Stream a job's output (no deadline: `follow` lasts as long as the job). A followed
        stream that breaks (a broker restart) reconnects, as `watch` does, and goes on from the
        last byte it yielded: nothing is shown twice."""
        attempt, end, failures = "", 0, 0
        while True:
            request = pb.StreamJobLogsRequest(id=job_id, follow=follow, tail_bytes=tail_bytes)
            try:
                for resp in self.stub.StreamJobLogs(request, metadata=self.metadata):
                    chunk = resp.chunk
                    if chunk.attempt_id == attempt and chunk.offset < end:  # shown before the break
                        if chunk.offset + len(chunk.data) <= end:
                            continue
                        chunk.data, chunk.offset = chunk.data[end - chunk.offset:], end
                    attempt, end, failures = chunk.attempt_id, chunk.offset + len(chunk.data), 0
                    yield resp
                return
            except grpc.RpcError as err:
                if not follow or err.code() != grpc.StatusCode.UNAVAILABLE or failures >= 30:
                    raise describe_rpc_error(err) from err
                failures += 1
                if attempt:  # the attempt from its start: what was shown is skipped above
                    tail_bytes = 0
                time.sleep(min(2.0, 0.2 * failures))

    def offers(self, request: pb.ListOffersRequest) -> pb.ListOffersResponse:
        try:
            return self.stub.ListOffers(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def status(self) -> pb.GetStatusResponse:
        try:
            return self.stub.GetStatus(pb.GetStatusRequest(), metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def policy_versions(self, limit: int = 50) -> pb.ListPolicyVersionsResponse:
        try:
            return self.stub.ListPolicyVersions(
                pb.ListPolicyVersionsRequest(page_size=limit), metadata=self.metadata, timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def policy_version(self, hash_prefix: str) -> pb.GetPolicyVersionResponse:
        try:
            return self.stub.GetPolicyVersion(
                pb.GetPolicyVersionRequest(hash=hash_prefix), metadata=self.metadata, timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def audit(self, request: pb.ListAuditEventsRequest) -> pb.ListAuditEventsResponse:
        try:
            return self.stub.ListAuditEvents(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def drain(self, site: str, reason: str) -> pb.DrainSiteResponse:
        try:
            return self.stub.DrainSite(
                pb.DrainSiteRequest(site=site, reason=reason), metadata=self.metadata, timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err

    def undrain(self, site: str) -> pb.UndrainSiteResponse:
        try:
            return self.stub.UndrainSite(
                pb.UndrainSiteRequest(site=site), metadata=self.metadata, timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise describe_rpc_error(err) from err
