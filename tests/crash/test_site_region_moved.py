"""A policy that moves a cloud site to another region while jobs run there is refused, live and
at a restart (held-out review of issue 11).

The adapter looks an instance up in its own region: moved, the running job's instance read as
gone, the job was called lost and run again, its finished result thrown away, and the instance
in the old region was left stopped for good (billed for its disks), "terminated" in the events.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc
import pytest

from broker.api import job_pb2
from tests.crash.client import TERMINAL, Stub, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront


def moved(text: str) -> str:
    """The same policy with `aws-east` (site and catalog) in us-west-2."""
    site = text.index("  - id: aws-east")
    end = text.index("  - id: aliyun-bj")
    return text[:site] + text[site:end].replace("us-east-1", "us-west-2") + text[end:]


def test_a_site_moved_to_another_region_while_a_job_runs_there_is_refused(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    broker = make_broker()
    broker.start()
    policy = broker.config.parent / "policy.yaml"
    before = policy.read_text()
    marks = tmp_path / "marks"
    marks.mkdir()
    code = (f"import pathlib, time\npathlib.Path({str(marks)!r}, 'up').touch()\n"
            f"while not pathlib.Path({str(marks)!r}, 'go').exists():\n    time.sleep(0.1)\nprint('done')")
    with Instances(moto, ecs, tmp_path / "instances"):
        with grpc.insecure_channel(broker.address) as channel:
            job = submit(Stub(channel), job_spec("moved", "A10G", [sys.executable, "-c", code]))
        deadline = time.monotonic() + 90
        while not (marks / "up").exists():
            assert time.monotonic() < deadline, "the instance never ran the job"
            time.sleep(0.1)
        policy.write_text(moved(before))  # live: the reload is refused
        assert broker.said("policy reload refused", timeout=30)
        line = before.splitlines().index("  - id: aws-east") + 1
        said = (f"policy.yaml:{line}:1: error: sites: 'aws-east' moves from region 'us-east-1' to "
                f"'us-west-2', but 1 job(s) still run in 'us-east-1' ({job.id})")
        assert broker.said(said), said
        broker.kill()  # and at a restart the broker says so and does not start
        with pytest.raises(RuntimeError, match="moves from region 'us-east-1' to 'us-west-2'"):
            broker.restart()
        policy.write_text(before)
        broker.restart()
        (marks / "go").touch()
        with grpc.insecure_channel(broker.address) as channel:
            final = wait_state(Stub(channel), job.id, TERMINAL, timeout=90)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "aws-east", final.message
        assert "done" in final.log_tail


def test_the_region_compared_is_the_one_the_adapter_works_in(tmp_path: Path) -> None:
    """Review of the change above: it compared the site's `region` label, where the adapter takes
    `adapter_config`'s or broker.yaml's: a move made there went through, and a label edited alone
    (the adapter pinned) was refused, at a restart too."""
    from datetime import UTC, datetime

    from broker.dispatch.reconcile import site_regions, sites_in_use
    from broker.model import JobSpec, Offer, SiteId, TenantId
    from broker.policy import load_policy
    from broker.store import SqliteStore, Submission
    from broker.yamlfile import PolicyError
    from tests.crash.world import write_setup

    write_setup(tmp_path, "http://127.0.0.1:9", "127.0.0.1:9", agent_port=9)
    text = (tmp_path / "policy.yaml").read_text()
    store = SqliteStore(tmp_path / "audit.db")
    now = datetime.now(UTC)
    spec = JobSpec.model_validate({"name": "east", "command": ["true"], "runtime_estimate": "1h"})
    [(job, _)] = store.submit(TenantId("crash-lab"), [Submission(spec)], now)
    offer = Offer(site=SiteId("aws-east"), instance_type="g5.xlarge", accelerator="A10G", count=1,
                  price_per_hour=1.0, region="us-east-1")
    attempt = store.create_attempt(job.id, offer.site, offer, "tok-east", now)
    store.update_attempt(attempt.id, now, backend_id="i-east")

    def problems(policy_text: str, settings: dict[str, dict[str, str]] | None = None) -> list[str]:
        (tmp_path / "candidate.yaml").write_text(policy_text)
        policy = load_policy(tmp_path / "candidate.yaml")
        found = sites_in_use(store, site_regions(policy, (), settings), "c.yaml", policy_text)
        return [p.message for p in found]

    site = "    region: us-east-1\n    country: US\n    residency: global\n    catalog: {file: aws-east.csv"
    pin = "    region: us-east-1\n    adapter_config: {region: us-east-1}\n" + site.split("\n", 1)[1]
    pinned = text.replace(site, pin, 1)
    assert pinned != text and problems(pinned) == []
    label = "region: us-east-1\n    adapter_config"
    label_only = pinned.replace(label, label.replace("us-east-1", "us-west-2"))
    moved_config = pinned.replace("{region: us-east-1}", "{region: us-west-2}")
    # Held-out review: a site's region label and its adapter's region may no longer disagree (its
    # catalog rows and residency were the label's, its instances the adapter's): refused at load.
    for disagreeing in (label_only, moved_config):
        with pytest.raises(PolicyError, match=r"adapter_config\.region: us-\w+-\d is not the site's region"):
            problems(disagreeing)
    assert any("moves from region 'us-east-1' to 'us-west-2'" in p for p in problems(moved(pinned)))
    assert any("moves from region" in p for p in problems(pinned, {"aws-east": {"region": "eu-west-1"}}))
    store.close()
