"""Issue 13: the same client_ids sent to two API replicas at once make one job each.

A client that times out on one replica retries its SubmitJobs on another, perhaps with the
requests in another order; both calls must answer with the same jobs, and neither may fail.
"""

from __future__ import annotations

import threading

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.store import PostgresStore
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import spec
from tests.ha.conftest import Cluster

ROUNDS = 8
BATCH = 30


def submit_at_once(
    stubs: list[broker_service_pb2_grpc.BrokerServiceStub], keys: list[str]
) -> list[dict[str, str] | str]:
    """SubmitJobs of the same client ids to each stub at the same moment, each in another order;
    per stub the client id -> job id it answered, or its error."""
    answers: list[dict[str, str] | str] = [""] * len(stubs)
    start = threading.Barrier(len(stubs))

    def submit(n: int) -> None:
        order = keys if n % 2 == 0 else keys[::-1]
        reqs = [pb.SubmitJobRequest(job=spec(k, ["true"]), client_id=k) for k in order]
        start.wait()
        try:
            got = stubs[n].SubmitJobs(
                pb.SubmitJobsRequest(requests=reqs), metadata=auth("team-a"), timeout=60
            )
            answers[n] = {k: r.job.id for k, r in zip(order, got.responses, strict=True)}
        except grpc.RpcError as exc:
            answers[n] = f"{exc.code().name}: {exc.details()}"

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(stubs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_two_replicas_given_the_same_client_ids_at_once_answer_with_the_same_jobs(cluster: Cluster) -> None:
    replicas = [cluster.start("api"), cluster.start("api")]
    channels = [grpc.insecure_channel(r.address) for r in replicas]
    stubs = [broker_service_pb2_grpc.BrokerServiceStub(c) for c in channels]
    try:
        for round_ in range(ROUNDS):
            answers = submit_at_once(stubs, [f"r{round_}-k{i}" for i in range(BATCH)])
            assert isinstance(answers[0], dict) and isinstance(answers[1], dict), answers
            assert answers[0] == answers[1]
    finally:
        for c in channels:
            c.close()
    store = PostgresStore(cluster.dsn)
    try:
        assert sum(store.count_by_state(None).values()) == ROUNDS * BATCH
    finally:
        store.close()
