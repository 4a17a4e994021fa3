"""Reclaim's waste budget on the local executor, over the CLI (issue 14).

`owner` is guaranteed one GPU on each of two 2-GPU partitions; `borrower` fills both. The
budget is a bucket of 1% of a partition over 10 min: it holds at most 12 accelerator-seconds of
lost work. A borrowed job that checkpoints every 5 s loses at most 5 s of work when preempted,
however long it ran, so it is reclaimed within what the bucket holds; one that does not
checkpoint and ran 15 s would lose 15, more than the bucket ever holds, and is reclaimed too,
since the bucket is full (the rate limit paces reclaim, it never keeps a quota for good).
How a bucket in debt delays the next reclaim, and says so: test_reclaim_bounded_e2e.py.
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
    "  - {id: owner, kind: institute, entity_country: CN, share: {quota: {lab/a800: 1, lab/h800: 1}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN}\n",
    a800(2, 10.0),
    "{name: h800, accelerator: H800, count_per_node: 2, price_hour: 12.0}",
    site="lab",
    rest="fair_share:\n  reclaim: {grace: 2s, max_capacity_share: 0.01, window: 10m}\n",
    catalogs=False,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(write_broker_folder(tmp_path_factory.mktemp("budget"), POLICY, TOKENS)) as proc:
        yield proc


def job_file(folder: Path, name: str, accelerator: str, *, checkpoint: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {name}
        command: ["{JOB_PYTHON}", "-c", "import time; time.sleep(600)"]
        resources:
          accelerators: {{count: 1, any_of: [{accelerator}]}}
        runtime_estimate: 20m
        max_wait: 2h
        """)
        + (f"checkpoint: {{interval: {checkpoint}}}\n" if checkpoint else "")
    )
    return path


def submit(broker: BrokerProcess, tenant: str, path: Path) -> str:
    out = szb(broker, TOKENS[tenant], "submit", str(path), "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return str((got[0] if isinstance(got, list) else got)["id"])


def show(broker: BrokerProcess, tenant: str, job_id: str) -> dict[str, object]:
    out = szb(broker, TOKENS[tenant], "get", job_id, "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return dict(got[0] if isinstance(got, list) else got)


def until(check: Callable[[], object], what: Callable[[], str], timeout: float = 45) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, what()
        time.sleep(0.3)


def borrow_both(broker: BrokerProcess, folder: Path, accelerator: str, checkpoint: str = "") -> list[str]:
    """The borrower runs both GPUs of a partition for at least 15 s."""
    name = accelerator.lower()
    jobs = [
        submit(broker, "borrower", job_file(folder, f"b{i}-{name}", accelerator, checkpoint=checkpoint))
        for i in range(2)
    ]
    running = lambda: all(show(broker, "borrower", j)["state"] == "RUNNING" for j in jobs)  # noqa: E731
    until(running, lambda: "borrowed jobs run")
    time.sleep(15)  # each has now run longer than the budget's 12 accelerator-seconds
    return jobs


def test_checkpointing_borrowed_work_is_reclaimed_for_what_it_would_lose(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    borrowed = borrow_both(broker, tmp_path, "A800", checkpoint="5s")
    mine = submit(broker, "owner", job_file(tmp_path, "mine-a800", "A800"))
    try:
        until(
            lambda: show(broker, "owner", mine)["state"] == "RUNNING",
            lambda: "the owner's job never got its quota back: "
            + str(show(broker, "owner", mine).get("pending_reason")),
        )
        # One borrowed job made room (preempted and requeued, waiting again); the other runs on.
        assert sorted(str(show(broker, "borrower", j)["state"]) for j in borrowed) == ["QUEUED", "RUNNING"]
    finally:
        for j in borrowed:
            szb(broker, TOKENS["borrower"], "cancel", j)
        szb(broker, TOKENS["owner"], "cancel", mine)


def test_work_that_would_lose_more_than_the_bucket_holds_is_reclaimed_when_it_is_full(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    borrowed = borrow_both(broker, tmp_path, "H800")
    path = job_file(tmp_path, "mine-h800", "H800")
    explained = szb(broker, TOKENS["owner"], "explain", str(path), "-o", "json")
    assert explained.returncode == 0, explained.stderr
    reasons = json.loads(explained.stdout)["decision"]["reasons"]
    assert reasons[0].startswith("reclaiming 1 borrowed unit(s) on lab/h800"), reasons
    mine = submit(broker, "owner", path)
    try:
        until(
            lambda: show(broker, "owner", mine)["state"] == "RUNNING",
            lambda: "the owner's job never got its quota back: "
            + str(show(broker, "owner", mine).get("pending_reason")),
        )
        assert sorted(str(show(broker, "borrower", j)["state"]) for j in borrowed) == ["QUEUED", "RUNNING"]
    finally:
        for j in borrowed:
            szb(broker, TOKENS["borrower"], "cancel", j)
        szb(broker, TOKENS["owner"], "cancel", mine)
