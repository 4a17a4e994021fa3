"""An AWS site whose profile is written after the broker started recovers without a restart.

README (Deployment) has the operator touch docker/secrets/aws_config first and fill it later.
A review found such a site `adapter not built: ... ProfileNotFound` for good, even after the
profile was written and SIGHUP sent, while an Alibaba site without keys was retried. Now the
adapter is built, the site is unhealthy naming the profile, and it takes work once the profile
exists. Through a real `szb serve` on moto.
"""

from __future__ import annotations

import time
from pathlib import Path

from broker.api import job_pb2
from tests.brokerproc import BrokerProcess, stub_for, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, job_yaml, submit_file, wait_state
from tests.doubles.moto_front import MotoFront

OPERATOR = "op-token-0123456789abcdef"
EAST = on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")


def status_line(broker: BrokerProcess, site: str) -> str:
    """The operator's `szb status` line about `site` being unhealthy ('' when it is not)."""
    shown = szb(broker, OPERATOR, "status").stdout
    return next((line for line in shown.splitlines() if line.startswith(f"unhealthy {site}")), "")


def test_a_profile_written_after_start_brings_the_site_in(
    moto: MotoFront, start_broker: StartBroker, tmp_path: Path
) -> None:
    config, credentials = tmp_path / "aws_config", tmp_path / "aws_credentials"
    config.write_text("")
    credentials.write_text("")
    settings = (
        f"{{endpoint_url: '{moto.url}', profile: szb-global, image_id: {on_moto.AMI}, "
        "live_prices: false, heartbeat_s: 1}"
    )
    broker = start_broker(
        on_moto.BrokerSetup(
            on_moto.POLICY_HEAD + EAST + on_moto.sg_lab_tail(),
            tokens={"sg-lab": TOKEN},
            operators={"sg-lab": OPERATOR},
            sites={"aws-east": settings},
            catalogs={"aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a")},
        ),
        extra_env={
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-role probe on a test box
        },
    )
    deadline = time.monotonic() + 60
    while "szb-global" not in (line := status_line(broker, "aws-east")):
        assert time.monotonic() < deadline, f"status never named the missing profile: {line!r}"
        time.sleep(0.5)
    assert "ProfileNotFound" in line and "not built" not in line, line

    config.write_text("[profile szb-global]\nregion = us-east-1\n")
    credentials.write_text("[szb-global]\naws_access_key_id = AKIDTESTTEST\naws_secret_access_key = secret\n")
    job = job_yaml(tmp_path, "a10g", max_wait="1h", estimate="2h", accelerators="A10G")
    job_id = submit_file(broker, TOKEN, job)
    with stub_for(broker.address) as stub:
        # The failed read is asked again after the cloud offers' minute (the existing back-off).
        running = wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING}, timeout=150)
    assert running.site == "aws-east"
    assert status_line(broker, "aws-east") == ""
    assert [action for action, _, _ in moto.scenario.calls if action == "RunInstances"] == ["RunInstances"]
