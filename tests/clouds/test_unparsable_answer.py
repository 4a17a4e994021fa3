"""A cloud endpoint that answers a launch with something its SDK cannot parse.

A load balancer or proxy in front of EC2 failing answers with an HTML error page (502, 503)
that starts with a doctype;
botocore raises `ResponseParserError`, which is not one of its `BotoCoreError`s. The launch
must still end with a reason on the job and the job move on: it was left PROVISIONING for
good, its attempt pending with no backend id and no event after "attempt 1 on aws-east".
Through a real `szb serve` on moto behind the fault front.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.aws import AwsAdapter
from adapters.base import TransientError
from broker.api import job_pb2
from broker.model import SiteId
from tests.brokerproc import stub_for
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker, launch
from tests.clouds.e2e_helpers import TOKEN, job_yaml, submit_file, wait_state
from tests.clouds.test_breaker_trial import events_so_far
from tests.doubles.moto_front import AwsFault, MotoFront
from tests.job_events import reached

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + on_moto.cloud_site("aws-west", "aws", "us-west-2", "aws-west.csv")
    + on_moto.sg_lab_tail("retries: {max_transient_retries: 2, backoff_initial: 0.05s, backoff_max: 0.1s}")
)


def test_an_html_error_page_fails_the_launch_with_a_reason_and_the_job_moves_on(
    moto: MotoFront, start_broker: StartBroker, tmp_path: Path
) -> None:
    aws = on_moto.aws_on_moto(moto.url, heartbeat_s=1)
    broker = start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"sg-lab": TOKEN},
            sites={"aws-east": aws, "aws-west": aws},
            catalogs={
                "aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a"),
                "aws-west.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.20,,us-west-2,us-west-2a"),
            },
        )
    )
    moto.scenario.faults.append(AwsFault("RunInstances", "BadGateway", 502, "Bad Gateway", region="us-east-1",
                                         html="html5"))
    job = job_yaml(tmp_path, "a10g", max_wait="0s", estimate="2h", accelerators="A10G")
    job_id = submit_file(broker, TOKEN, job)
    with stub_for(broker.address) as stub:
        running = wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING})
        history = [e.message for e in events_so_far(stub, job_id, until=reached(job_pb2.JOB_STATE_RUNNING))]
    assert running.site == "aws-west", history
    failed = next(m for m in history if m.startswith("attempt 1 on aws-east") and "failed" in m)
    assert "502" in failed or "parse" in failed, failed
    assert len(failed) < 600, failed  # the page is not pasted whole into the job's history


@pytest.mark.parametrize("kind", ["html5", "bare"])
def test_an_html_error_page_is_a_transient_error_naming_the_status(moto: MotoFront, kind: str) -> None:
    adapter = AwsAdapter(
        SiteId("aws-east"),
        {"region": "us-east-1", "endpoint_url": moto.url, "access_key_id": "AKIDTESTTEST",
         "secret_access_key": "secret", "image_id": on_moto.AMI, "live_prices": False,
         "instance_types": [{"instance_type": "g5.xlarge", "price_per_hour": 1.0}]},
    )
    moto.scenario.faults.append(AwsFault("RunInstances", "BadGateway", 502, "Bad Gateway", html=kind))
    offer = adapter.offers(datetime.now(UTC))[0]
    with pytest.raises(TransientError) as err:
        adapter.submit(launch(offer, "tok-html"))
    assert err.value.code in ("UnparsableAnswer", "HTTP502"), err.value
