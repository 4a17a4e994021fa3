"""Generated gRPC code (see `make protos`), re-exported under short names."""

from broker.api.shangzhuang.broker.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    broker_service_pb2,
    broker_service_pb2_grpc,
    job_pb2,
    placement_pb2,
)

__all__ = [
    "agent_service_pb2",
    "agent_service_pb2_grpc",
    "broker_service_pb2",
    "broker_service_pb2_grpc",
    "job_pb2",
    "placement_pb2",
]
