"""A broker (tests/e2e's small policy, the local site) with an AWS site that has no credentials
anywhere: the broker builds it (or not) and keeps it out of service, its catalog still priced."""

from __future__ import annotations

import shutil
from pathlib import Path

from broker.auth import Role, token_entry_line
from tests.brokerproc import ROOT, BrokerProcess
from tests.clouds.test_metrics_e2e import OPERATOR
from tests.e2e.conftest import POLICY, write_broker_config

AWS_SITE = """\
  - id: aws-east
    adapter: aws
    adapter_config:
      {{region: us-east-1, {config}image_id: ami-0szb, subnet_id: subnet-szb}}
    provider: aws
    region: us-east-1
    country: US
    residency: global
    catalog: {{file: catalog/aws.csv, region: us-east-1, currency: USD}}
tenants:"""

NO_PROFILE = "profile: no-such-profile-r7, "
"""A profile no config file has: the adapter is built, and its calls fail (ConfigError
ProfileNotFound) until the profile is written."""
CATALOG_ONLY = "live_prices: false, "
"""Prices from the catalog: only listing its instances asks AWS anything (NoCredentials)."""


def aws_nowhere(folder: Path, config: str = NO_PROFILE, *, metrics: bool = True) -> BrokerProcess:
    """The broker's folder, written (not started): `config` goes into the site's adapter_config."""
    broker_yaml = write_broker_config(folder)
    with (folder / "tokens.yaml").open("a") as tokens:
        tokens.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "prometheus") + "\n")
    (folder / "catalog").mkdir()
    shutil.copy(ROOT / "configs" / "catalog" / "aws_gpu_vms.csv", folder / "catalog" / "aws.csv")
    site = AWS_SITE.format(config=config)
    (folder / "policy.yaml").write_text(
        POLICY.replace("tenants:", site).replace("currency: CNY", "currency: CNY\nfx: {USD: 7.2}")
    )
    nowhere = str(folder / "no-aws-config")
    clean = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    env = {**clean, "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
           "AWS_EC2_METADATA_DISABLED": "true"}
    if metrics:
        env["SZB_METRICS_LISTEN"] = "127.0.0.1:0"
    return BrokerProcess(broker_yaml, extra_env=env)
