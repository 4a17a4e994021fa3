"""Reclaim's waste budget outlives a broker restart, as usage does (issue 14 leftovers).

`owner` is guaranteed one GPU of a 2-GPU partition; `borrower` fills it with jobs that do not
checkpoint. The budget is a bucket of 1% of the partition over 10 min: it holds at most 12
accelerator-seconds and refills at 0.02 per second. The first reclaim loses more than the bucket
holds (the borrowed job ran over 15 s) and goes because the bucket is full, into a debt that takes
more than ten minutes to repay. A restart must not hand the bucket back full: the owner's next
reclaim still waits, saying when.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.brokerproc import BrokerProcess, szb, write_broker_folder
from tests.fairshare.test_reclaim_bounded_e2e import POLICY as BOUNDED
from tests.fairshare.test_reclaim_bounded_e2e import TOKENS, show, submit, until

POLICY = BOUNDED.replace(
    "reclaim: {grace: 1s, max_capacity_share: 0.25, window: 20s}",
    "reclaim: {grace: 1s, max_capacity_share: 0.01, window: 10m}",
)


def test_a_restart_does_not_refill_the_reclaim_budget(tmp_path: Path) -> None:
    assert POLICY != BOUNDED
    broker = BrokerProcess(write_broker_folder(tmp_path / "broker", POLICY, TOKENS))
    broker.start()
    borrowed = [submit(broker, "borrower", tmp_path, f"b{i}") for i in range(2)]
    mine: list[str] = []

    def running(tenant: str, jobs: list[str]) -> bool:
        return all(show(broker, tenant, j)["state"] == "RUNNING" for j in jobs)

    def stuck() -> str:
        return f"the owner's job never started: {show(broker, 'owner', mine[-1]).get('pending_reason')}"

    try:
        until(lambda: running("borrower", borrowed), lambda: "borrowed jobs run")
        time.sleep(15)  # each would now lose over 15 accelerator-seconds: more than the bucket holds
        mine.append(submit(broker, "owner", tmp_path, "mine-1"))
        until(lambda: running("owner", mine[-1:]), stuck)  # the bucket was full: it goes, into debt
        szb(broker, TOKENS["owner"], "cancel", mine[-1])
        until(lambda: running("borrower", borrowed), lambda: "the preempted borrowed job runs again")

        broker.stop()
        broker.restart()
        mine.append(submit(broker, "owner", tmp_path, "mine-2"))

        def waiting_says_when() -> str:
            got = show(broker, "owner", mine[-1])
            said = str(got.get("pending_reason", ""))
            assert got["state"] != "RUNNING", "the restart refilled the reclaim budget: " + said
            return said if "reclaimed in about" in said else ""

        reason = str(until(waiting_says_when, stuck))
        assert "work of other tenants" in reason and "budget holds -" in reason, reason
        assert "borrower" not in reason, reason  # (another tenant's name is not the owner's to learn)
    finally:
        for j in borrowed:
            szb(broker, TOKENS["borrower"], "cancel", j)
        for j in mine:
            szb(broker, TOKENS["owner"], "cancel", j)
        states = lambda: [show(broker, "borrower", j)["state"] for j in borrowed]  # noqa: E731
        until(lambda: "RUNNING" not in states(), lambda: f"borrowed jobs not stopped: {states()}", 120)
        broker.stop()
