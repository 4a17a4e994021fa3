"""What an operator reads from `szb` against a running `szb serve` with a tokens file: whose job
it is, why a job waits at 80 columns, and what a refusal says (a review of issue 12, "Operable")."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.brokerproc import JOB_PYTHON, BrokerProcess
from tests.brokerproc import szb as run_szb
from tests.e2e.conftest import TOKENS, auth, write_broker_config

OPERATOR = "token-operator-oncall-0123456789"
Stub = broker_service_pb2_grpc.BrokerServiceStub


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("operable")
    config = write_broker_config(folder)
    with (folder / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("team-a", OPERATOR, Role.OPERATOR, "oncall") + "\n")
    with config.open("a") as f:
        f.write("tokens_reload_s: 0.2\nlog_format: json\n")
    proc = BrokerProcess(config, extra_env={"SZB_METRICS_LISTEN": "127.0.0.1:0"})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def szb(broker: BrokerProcess, token: str, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return run_szb(broker, token, *args, env={"COLUMNS": str(columns)})


def submit(stub: Stub, tenant: str, name: str, *, seconds: float = 60, gpus: int = 0) -> str:
    job = job_pb2.JobSpec(name=name, command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"])
    job.runtime_estimate.seconds = 600
    if gpus:
        job.resources.accelerators.count = gpus
        job.resources.accelerators.any_of.append("A800")
    return stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth(tenant)).job.id


def header(table: str) -> list[str]:
    line = next(line for line in table.splitlines() if "ID" in line and "STATE" in line)
    return [cell.strip() for cell in line.strip("┃│ ").replace("│", "┃").split("┃")]


def test_an_operator_sees_whose_job_it_is_in_get_and_every_wide_table(
    broker: BrokerProcess, stub: Stub
) -> None:
    """`szb get ID` (wide or not) had no TENANT column, and `szb list` showed one only when its
    page spanned two tenants, so `list --tenant X --wide` ("every column") never did."""
    job_id = submit(stub, "team-b", "whose")
    try:
        for args in (("get", job_id), ("get", job_id, "--wide"), ("list", "--tenant", "team-b", "--wide")):
            out = szb(broker, OPERATOR, *args)
            assert out.returncode == 0, out.stderr
            assert "TENANT" in header(out.stdout), (args, out.stdout)
            row = next(line for line in out.stdout.splitlines() if job_id in line)
            assert "team-b" in row, (args, out.stdout)
        # A tenant's own --wide table is every column too.
        own = szb(broker, TOKENS["team-b"], "list", "--wide")
        assert "TENANT" in header(own.stdout), own.stdout
    finally:
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("team-b"))


def test_a_caller_without_a_token_is_told_so_in_plain_words(broker: BrokerProcess) -> None:
    """The bearer mask took the word after "bearer" in the broker's own message: `szb list` with
    no SZB_TOKEN printed "missing bearer [REDACTED] in 'authorization' metadata"."""
    out = szb(broker, "", "list")
    assert out.returncode == 1
    assert out.stderr == "szb: error: UNAUTHENTICATED: missing bearer token in 'authorization' metadata\n"
