"""AgentService over gRPC: heartbeats, exit reports and output from cloud instances."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from broker.api import agent_service_pb2, agent_service_pb2_grpc
from broker.rpc_errors import _BadRequest, abort_with
from broker.service import BrokerServices
from broker.validation import FieldViolation


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    """Heartbeats and exit reports from bootstraps on cloud instances; one token per attempt."""

    def __init__(self, services: BrokerServices) -> None:
        self.services = services

    async def Heartbeat(
        self, request: agent_service_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.HeartbeatResponse:
        try:
            stop = self.services.agent_report(
                request.attempt_id, request.token, "heartbeat" if request.running else "alive", None, ""
            )
            return agent_service_pb2.HeartbeatResponse(stop=stop)
        except Exception as exc:
            await abort_with(context, exc)

    async def ReportExit(
        self, request: agent_service_pb2.ReportExitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.ReportExitResponse:
        try:
            rank = request.rank if request.HasField("rank") else None
            self.services.agent_report(
                request.attempt_id, request.token, "exit", request.exit_code, request.log_tail, rank
            )
            return agent_service_pb2.ReportExitResponse()
        except Exception as exc:
            await abort_with(context, exc)

    async def AppendLog(
        self, request: agent_service_pb2.AppendLogRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.AppendLogResponse:
        try:
            if request.offset < 0:
                raise _BadRequest([FieldViolation("offset", "must be >= 0")])
            next_offset = await asyncio.to_thread(
                self.services.agent_log, request.attempt_id, request.token, request.offset, request.data
            )
            return agent_service_pb2.AppendLogResponse(next_offset=next_offset)
        except Exception as exc:
            await abort_with(context, exc)
