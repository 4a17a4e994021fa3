"""A job no quota can ever admit is refused at submit; one a reload made so keeps waiting.

`strict` may not borrow and has no cloud route (the policy has no cloud site). With no quota on
the one partition that could run its job, the job would wait for ever (an "∞" wait); it is
refused with FAILED_PRECONDITION naming the quota instead. A job stored before a reload took
the quota away is not dropped: it keeps waiting, saying why.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.brokerproc import BrokerProcess, szb, write_broker_folder
from tests.fairshare.test_no_borrow_beyond_quota_e2e import POLICY as NO_BORROW
from tests.fairshare.test_no_borrow_beyond_quota_e2e import TOKENS, job_file, show, submit, until

WITH_QUOTA = "share: {quota: {lab/gpu: 2}, may_borrow: false}"
POLICY = NO_BORROW.replace("share: {quota: {lab/gpu: 1}, may_borrow: false}", WITH_QUOTA).replace(
    "fair_share: {half_life: 1h}", "fair_share: {half_life: 1h, reclaim: {enabled: false}}"
)
NO_QUOTA = POLICY.replace(WITH_QUOTA, "share: {may_borrow: false}")


def policy_hash(broker: BrokerProcess) -> str:
    out = szb(broker, TOKENS["busy"], "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["policy_hash"])


def test_a_job_no_quota_admits_is_refused_and_a_stored_one_keeps_waiting(tmp_path: Path) -> None:
    assert WITH_QUOTA in POLICY and "reclaim" in POLICY and NO_QUOTA != POLICY
    broker = BrokerProcess(write_broker_folder(tmp_path / "broker", POLICY, TOKENS))
    broker.start()
    jobs: list[tuple[str, str]] = []
    try:
        jobs.append(("busy", submit(broker, "busy", job_file(tmp_path, "fill", 4, 600))))
        until(lambda: show(broker, "busy", jobs[0][1])["state"] == "RUNNING", "busy fills the partition")
        jobs.append(("strict", submit(broker, "strict", job_file(tmp_path, "mine", 2, 5))))
        until(lambda: show(broker, "strict", jobs[1][1]).get("pending_reason"), "strict's job waits")

        old = policy_hash(broker)
        (tmp_path / "broker" / "policy.yaml").write_text(NO_QUOTA)
        until(lambda: policy_hash(broker) != old, "the reload is in force")

        refused = szb(broker, TOKENS["strict"], "submit", str(job_file(tmp_path, "again", 2, 5)))
        assert refused.returncode != 0, refused.stdout
        said = refused.stderr
        assert "FAILED_PRECONDITION" in said or "no allowed offer" in said, said
        assert "quota on lab/gpu is 0" in said and "may not borrow" in said, said

        def reason() -> str:
            got = show(broker, "strict", jobs[1][1])
            assert got["state"] == "QUEUED", got  # stored work is never dropped
            text = str(got.get("pending_reason", ""))
            return text if "quota on lab/gpu is 0" in text else ""

        until(reason, "the stored job never said its quota is gone")
    finally:
        for tenant, job_id in jobs:
            szb(broker, TOKENS[tenant], "cancel", job_id)
        until(lambda: show(broker, "busy", jobs[0][1])["state"] != "RUNNING", "busy's job stops", 60)
        broker.stop()
