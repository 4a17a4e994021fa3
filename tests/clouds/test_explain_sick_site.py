"""Live explain charges an offer to a sick site only when the job could use it otherwise.

A review ran the README's quick tour with every site out of service: `szb explain JOB
--server` said `0 of 218 offers allowed: 218 health.site` while the offline explain said `7 of
218 offers allowed: 211 hardware.fit`: health runs first, so every offer of a sick site was
charged to it, and the 211 that can never fit read as waiting for the site. Through a real
`szb serve` on moto, an AWS site out of service (its profile is missing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.brokerproc import szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, job_yaml, submit_file
from tests.doubles.moto_front import MotoFront


def test_misfits_at_a_sick_site_are_misfits(
    moto: MotoFront, start_broker: StartBroker, tmp_path: Path
) -> None:
    for name in ("aws_config", "aws_credentials"):
        (tmp_path / name).write_text("")
    broker = start_broker(
        on_moto.BrokerSetup(
            on_moto.POLICY_HEAD + on_moto.ONPREM_A800
            + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv") + on_moto.sg_lab_tail(),
            tokens={"sg-lab": TOKEN},
            sites={"aws-east": f"{{endpoint_url: '{moto.url}', profile: szb-gone, image_id: {on_moto.AMI}, "
                               "live_prices: false}"},
            catalogs={"aws-east.csv": on_moto.catalog(
                "g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a",
                "g4dn.xlarge,T4,1,4,16,0.526,,us-east-1,us-east-1a",
                "p5.48xlarge,H100,8,192,2048,98.32,,us-east-1,us-east-1a",
            )},
        ),
        extra_env={"AWS_CONFIG_FILE": str(tmp_path / "aws_config"), "AWS_EC2_METADATA_DISABLED": "true",
                   "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws_credentials")},
    )
    job_id = submit_file(broker, TOKEN, job_yaml(tmp_path, "a10g", max_wait="1d", accelerators="A10G"))
    deadline = time.monotonic() + 60
    while True:
        out = szb(broker, TOKEN, "explain", job_id, "-o", "json")
        assert out.returncode in (0, 1), out.stderr
        body = json.loads(out.stdout)
        counts = {r["rule"]: r["offers"] for r in body["rejections"]}
        if "health.site" in counts:
            break
        assert time.monotonic() < deadline, f"aws-east never read as unhealthy: {counts}"
        time.sleep(0.5)
    assert body["allowed_offers"] == 0 and len(body["offers"]) == 4, body
    # Only the A10G, which the job fits, waits for the site; the T4, the H100 gang of 8 and the
    # on-prem A800 are misfits wherever they are.
    assert counts["health.site"] == 1, counts
    assert sum(n for rule, n in counts.items() if rule.startswith("hardware.")) == 3, counts
    why = {o["instance_type"]: o["reasons"][0]["rule"] for o in body["offers"]}
    assert why["g5.xlarge"] == "health.site" and why["g4dn.xlarge"].startswith("hardware."), why
    text = szb(broker, TOKEN, "explain", job_id).stdout
    assert "0 of 4 offers allowed: 1 health.site, " in text and "blocked by [health.site]" in text, text
