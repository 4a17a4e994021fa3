"""A guaranteed quota comes back in bounded time, however long borrowed work ran (issue 14).

`owner` is guaranteed one GPU of a 2-GPU partition; `borrower` fills it with jobs that do not
checkpoint. The reclaim budget is a bucket of 25% of the partition over 20 s: it holds at most
10 accelerator-seconds and refills at 0.5 per second (slowly, so the debt outlasts the steps
between the two reclaims however loaded the machine is). Each borrowed job has run longer than the
whole bucket, so preempting one loses more than it can ever hold; it is preempted anyway when
the bucket is full, which goes into debt, and the owner's next reclaim waits, saying when, until
the debt is repaid, then goes too.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.brokerproc import JOB_PYTHON, BrokerProcess, running_broker, szb, write_broker_folder
from tests.local_policy import a800, local_policy

TOKENS = {"owner": "token-owner-0123456789", "borrower": "token-borrower-012345"}

POLICY = local_policy(
    "  - {id: owner, kind: institute, entity_country: CN, share: {quota: {lab/a800: 1}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN}\n",
    a800(2, 10.0),
    site="lab",
    rest="fair_share:\n  reclaim: {grace: 1s, max_capacity_share: 0.25, window: 20s}\n",
    catalogs=False,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(write_broker_folder(tmp_path_factory.mktemp("bounded"), POLICY, TOKENS)) as proc:
        yield proc


def submit(broker: BrokerProcess, tenant: str, folder: Path, name: str) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {name}
        command: ["{JOB_PYTHON}", "-c", "import time; time.sleep(600)"]
        resources:
          accelerators: {{count: 1, any_of: [A800]}}
        runtime_estimate: 20m
        max_wait: 2h
        """)
    )
    out = szb(broker, TOKENS[tenant], "submit", str(path), "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return str((got[0] if isinstance(got, list) else got)["id"])


def show(broker: BrokerProcess, tenant: str, job_id: str) -> dict[str, object]:
    out = szb(broker, TOKENS[tenant], "get", job_id, "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return dict(got[0] if isinstance(got, list) else got)


def until(check: Callable[[], object], what: Callable[[], str], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, what()
        time.sleep(0.3)


def test_an_owner_gets_its_quota_back_from_long_borrowed_work(broker: BrokerProcess, tmp_path: Path) -> None:
    borrowed = [submit(broker, "borrower", tmp_path, f"b{i}") for i in range(2)]
    mine: list[str] = []

    def running(tenant: str, jobs: list[str]) -> bool:
        return all(show(broker, tenant, j)["state"] == "RUNNING" for j in jobs)

    def stuck() -> str:
        said = show(broker, "owner", mine[-1]).get("pending_reason")
        return f"the owner's job never got its quota back: {said}"

    try:
        until(lambda: running("borrower", borrowed), lambda: "borrowed jobs run")
        time.sleep(25)  # each would now lose 25 accelerator-seconds: more than the bucket ever holds
        mine.append(submit(broker, "owner", tmp_path, "mine-1"))
        until(lambda: running("owner", mine[-1:]), stuck)  # the bucket was full: it goes, into debt

        # The owner's job ends; the preempted borrowed job takes its GPU back, borrowed again.
        szb(broker, TOKENS["owner"], "cancel", mine[-1])
        until(lambda: running("borrower", borrowed), lambda: "the preempted borrowed job runs again")
        mine.append(submit(broker, "owner", tmp_path, "mine-2"))

        def waiting_says_when() -> str:
            got = show(broker, "owner", mine[-1])
            said = str(got.get("pending_reason", ""))
            assert got["state"] != "RUNNING", "the second reclaim went while the budget was in debt"
            return said if "reclaimed in about" in said else ""

        reason = str(until(waiting_says_when, stuck))
        assert "work of other tenants" in reason and "budget" in reason, reason
        assert "borrower" not in reason, reason  # (another tenant's name is not the owner's to learn)
        # The bucket refills slower than the borrowed job's loss grows: it goes when the bucket is full.
        until(lambda: running("owner", mine[-1:]), stuck, timeout=150)
    finally:
        for j in borrowed:
            szb(broker, TOKENS["borrower"], "cancel", j)
        for j in mine:
            szb(broker, TOKENS["owner"], "cancel", j)
