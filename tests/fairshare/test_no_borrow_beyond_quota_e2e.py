"""A no-borrow tenant's job larger than its quota, on the local executor over the CLI (issue 14).

`strict` is guaranteed 1 of the 4 A800s and may not borrow; a 2-GPU job can never start
on-prem, so it is refused at submit. One queued while its quota was 2, before a reload cut the
quota to 1, waits: it must neither keep idle GPUs from other tenants (a fair-share hold for a
job that may not take them) nor claim it "has used its guaranteed quota" when it uses none of it.
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

TOKENS = {"strict": "token-strict-0123456789", "busy": "token-busy-01234567890"}

POLICY = local_policy(
    "  - {id: strict, kind: institute, entity_country: CN, share: {quota: {lab/gpu: 1}, may_borrow: false}}\n"
    "  - {id: busy, kind: sme, entity_country: CN}\n",
    a800(4, 10.0, name="gpu"),
    site="lab",
    rest="fair_share: {half_life: 1h, reclaim: {enabled: false}}\n",
    catalogs=False,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(write_broker_folder(tmp_path_factory.mktemp("nobarrow"), POLICY, TOKENS)) as proc:
        yield proc


def job_file(folder: Path, name: str, gpus: int, seconds: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {name}
        command: ["{JOB_PYTHON}", "-c", "import time; time.sleep({seconds})"]
        resources:
          accelerators: {{count: {gpus}, any_of: [A800]}}
        runtime_estimate: 1h
        max_wait: 2h
        """)
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


def until(check: Callable[[], object], what: str, timeout: float = 45) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def with_quota(broker: BrokerProcess, quota: int) -> None:
    """Reload the policy with strict's quota on lab/gpu set to `quota`, and wait until in force."""
    def current() -> str:
        out = szb(broker, TOKENS["busy"], "status", "-o", "json")
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["policy_hash"])

    text = POLICY.replace("{lab/gpu: 1}", f"{{lab/gpu: {quota}}}")
    policy_file = broker.config.parent / "policy.yaml"
    if policy_file.read_text() == text:
        return
    old = current()
    policy_file.write_text(text)
    until(lambda: current() != old, f"the reload to quota {quota} is in force")


def busy_fills_three_and_strict_waits(broker: BrokerProcess, folder: Path) -> tuple[list[str], str]:
    """busy runs three 1-GPU jobs (one A800 left idle); strict's 2-GPU job, queued under a quota
    of 2, then waits under a quota of 1 (a reload), which could never start it."""
    with_quota(broker, 2)
    running = [submit(broker, "busy", job_file(folder, f"long{i}", 1, 600)) for i in range(3)]
    until(
        lambda: all(show(broker, "busy", j)["state"] == "RUNNING" for j in running),
        "busy's three jobs run",
    )
    big = submit(broker, "strict", job_file(folder, "big", 2, 5))
    with_quota(broker, 1)

    def standing() -> str:
        said = str(show(broker, "strict", big).get("pending_reason", ""))
        return said if "tenant order" in said else ""

    until(standing, "the big job's reason never named its standing")
    return running, big


def cancel(broker: BrokerProcess, running: list[str], big: str) -> None:
    for j in running:
        szb(broker, TOKENS["busy"], "cancel", j)
    szb(broker, TOKENS["strict"], "cancel", big)
    until(
        lambda: all(show(broker, "busy", j)["state"] == "CANCELLED" for j in running),
        "busy's jobs end",
    )


def test_a_job_larger_than_a_no_borrow_quota_holds_no_idle_gpu(broker: BrokerProcess, tmp_path: Path) -> None:
    running, big = busy_fills_three_and_strict_waits(broker, tmp_path)
    # The fourth A800 is idle and strict may not take it: busy's next job runs there, not held
    # back for a job that may never use it.
    small = submit(broker, "busy", job_file(tmp_path, "small", 1, 600))
    try:
        until(
            lambda: show(broker, "busy", small)["state"] == "RUNNING",
            "busy's job waited for a GPU held for a job that may never use it: "
            + str(show(broker, "busy", small).get("pending_reason")),
        )
    finally:
        cancel(broker, [*running, small], big)


def test_a_job_larger_than_a_no_borrow_quota_says_so(broker: BrokerProcess, tmp_path: Path) -> None:
    running, big = busy_fills_three_and_strict_waits(broker, tmp_path)
    try:
        reason = str(show(broker, "strict", big)["pending_reason"])
        # strict runs nothing: its quota is not used up, the job is larger than it.
        assert "has used its guaranteed quota" not in reason, reason
        assert "quota on lab/gpu is 1" in reason and "the 2 the job needs" in reason, reason
        explained = szb(broker, TOKENS["strict"], "explain", str(tmp_path / "big.yaml"), "-o", "json")
        assert explained.returncode == 0, explained.stderr
        # Explained as a new submission, which is refused: no quota will ever admit it.
        decision = json.loads(explained.stdout)["decision"]
        assert decision["action"] == "reject", decision
        assert "quota on lab/gpu is 1, less than the 2 the job needs" in decision["reasons"][0], decision
    finally:
        cancel(broker, running, big)


def test_a_job_larger_than_a_no_borrow_quota_is_refused_at_submit(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with_quota(broker, 1)
    refused = szb(broker, TOKENS["strict"], "submit", str(job_file(tmp_path, "too-big", 2, 5)))
    assert refused.returncode != 0, refused.stdout
    said = refused.stderr
    assert "FAILED_PRECONDITION" in said or "no allowed offer" in said, said
    assert "quota on lab/gpu is 1, less than the 2 the job needs" in said and "never start" in said, said
    fits = submit(broker, "strict", job_file(tmp_path, "fits", 1, 1))
    until(lambda: show(broker, "strict", fits)["state"] == "SUCCEEDED", "strict's 1-GPU job runs")
