"""A cloud site whose listing keeps failing with an auth or config error is retried with back-off.

Found by a README review: with the shipped `configs/broker.yaml`, four sites without credentials
were listed again on every dispatcher turn (every 2 s, and once more per submission), for ever:
120 warning lines a minute. At start such a site counts as unreachable; a later listing's auth
error was left out of the report, so the site's retry time was never moved on.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import POLICY, write_broker_config
from tests.e2e.test_spot_only_admission import AWS_SITE


def test_a_site_without_credentials_is_listed_again_with_back_off(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    (tmp_path / "catalog").mkdir()
    shutil.copy(ROOT / "configs" / "catalog" / "aws_gpu_vms.csv", tmp_path / "catalog" / "aws.csv")
    policy = POLICY.replace("tenants:", AWS_SITE).replace("currency: CNY", "currency: CNY\nfx: {USD: 7.2}")
    (tmp_path / "policy.yaml").write_text(policy)
    nowhere = str(tmp_path / "no-aws-config")
    clean = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    broker = BrokerProcess(config, extra_env={
        **clean, "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    broker.start(timeout=120)
    try:
        time.sleep(20)
    finally:
        broker.stop()
    tries = [line for line in broker.output if "aws-east could not be listed" in line]
    # At start, then after 2, 4, 8 (and 16) s: five at most in 20 s, not one every 2 s.
    assert 2 <= len(tries) <= 5, "".join(tries)
