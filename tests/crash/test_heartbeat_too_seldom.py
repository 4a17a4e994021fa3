"""A cloud site's heartbeat_s at or above half the policy's heartbeat timeout is named at start.

Issue 11 review, defect 4: such a setting was taken silently, and every cloud job that ran
past the timeout between two heartbeats was taken for lost and run again.
"""

from __future__ import annotations

from tests.crash.conftest import MakeBroker


def test_szb_serve_warns_of_a_heartbeat_too_seldom_for_the_timeout(make_broker: MakeBroker) -> None:
    broker = make_broker(heartbeat_timeout="15s")
    text = broker.config.read_text()
    aws = next(line for line in text.splitlines() if line.strip().startswith("aws-east:"))
    broker.config.write_text(text.replace(aws, aws.replace("heartbeat_s: 1,", "heartbeat_s: 60,")))
    broker.start()
    assert broker.said("site aws-east: heartbeat_s 60"), "".join(broker.output)
    warning = next(line for line in broker.output if "site aws-east: heartbeat_s 60" in line)
    assert "burst.heartbeat_timeout 15s" in warning and "taken for lost" in warning, warning
    # The other cloud sites heartbeat every second: well under half of 15 s.
    assert not any("site aliyun-bj: heartbeat_s" in line for line in broker.output)
