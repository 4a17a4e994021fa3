"""A real broker process per test module, with two tenants and a small local inventory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokerproc import JOB_PYTHON, BrokerProcess, write_broker_folder
from tests.local_policy import a800, cpu, local_policy

TOKENS = {"team-a": "token-team-a-0123456789", "team-b": "token-team-b-9876543210"}

POLICY = local_policy(
    "  - {id: team-a, kind: university, entity_country: CN}\n"
    "  - {id: team-b, kind: institute, entity_country: CN}\n",
    a800(4),
    cpu(8),
    rest="# test_restart floods 10,000 jobs at once; tests/e2e/test_quotas.py checks the defaults.\n"
    "limits: {max_queued_jobs: 20000, submit_burst: 20000}\n",
    objective=True,
)


def write_broker_config(folder: Path, *, cancel_grace_s: float = 2.0) -> Path:
    """A broker.yaml + policy + tokens file in `folder`; returns the broker.yaml path."""
    return write_broker_folder(
        folder, POLICY, TOKENS, broker_extra=f"sites:\n  local: {{cancel_grace_s: {cancel_grace_s}}}\n"
    )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = write_broker_config(tmp_path_factory.mktemp("broker"))
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


PY = JOB_PYTHON
