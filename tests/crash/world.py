"""A broker configured against the cloud doubles, with ports that survive a restart.

A cloud instance reports to the agent endpoint it was given at launch, so a broker that is
killed and restarted must come back on the same agent port (and the same gRPC port for the
clients): `write_setup` pins both. Sites: `onprem` (local executor, one A800), `aws-east`
(moto, A10G), `aliyun-bj` (the ECS double, A10) and `lc-east` (libcloud's EC2 driver against
moto, T4), so a job picks its cloud by the accelerator it asks for.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from broker.auth import hash_token
from broker.store import JobStore, PostgresStore, SqliteStore
from tests.brokerproc import BrokerProcess, copy_hardware_files

TOKEN = "token-crash-lab-0123456789"
AMI = "ami-12c6146b"  # one of moto's stock images
ECS_KEYS = {"ak-test": "sk-test"}
ACCEL_SITE = {"A10G": "aws-east", "A10": "aliyun-bj", "T4": "lc-east", "A800": "onprem"}
HEADER = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone"
)

POLICY = """\
version: 1
currency: CNY
fx: {{USD: 7.2}}
objective: {{price: 1.0, wait_hour_cost: 40}}
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: onprem
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}}
  - id: aws-east
    adapter: aws
    region: us-east-1
    country: US
    residency: global
    catalog: {{file: aws-east.csv, region: us-east-1, currency: USD, spot: {spot}}}
  - id: aliyun-bj
    adapter: alibaba
    region: cn-beijing
    country: CN
    residency: cn-mainland
    catalog: {{file: ali.csv, region: cn-beijing, currency: CNY, spot: {spot}}}
  - id: lc-east
    adapter: libcloud
    region: us-east-1
    country: US
    residency: global
    catalog: {{file: lc-east.csv, region: us-east-1, currency: USD, spot: false}}
tenants:
  - {{id: crash-lab, kind: partner, entity_country: SG}}
burst:
  sites:
    aws-east: {{max_provisioning: 50}}
    aliyun-bj: {{max_provisioning: 50}}
    lc-east: {{max_provisioning: 50}}
  retries: {{max_transient_retries: 4, backoff_initial: 0.05s, backoff_max: 0.2s}}
  heartbeat_timeout: {heartbeat_timeout}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""



def write_setup(
    folder: Path,
    moto_url: str,
    ecs_address: str,
    *,
    agent_port: int,
    store_dsn: str | None = None,
    heartbeat_timeout: str = "1h",
    report_give_up_s: int = 1800,
    reconcile_interval_s: float = 1.0,
    lc_endpoint_port: int | None = None,
    spot: bool = False,
    agent_endpoint: str = "",
) -> Path:
    """broker.yaml (+ policy, catalogs, tokens) in `folder`; returns the broker.yaml path.

    `spot`: aws-east and aliyun-bj also sell their type on spot (a spot price in the catalog);
    `agent_endpoint`: where instances report (a proxy in front of the agent port, say)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy_hardware_files(folder)
    aws_spot, ali_spot = ("0.302", "4.00") if spot else ("", "")
    (folder / "aws-east.csv").write_text(
        f"{HEADER}\ng5.xlarge,A10G,1,4,16,1.006,{aws_spot},us-east-1,us-east-1a\n"
    )
    (folder / "ali.csv").write_text(
        f"{HEADER},Currency\necs.gn7i-c8g1.2xlarge,A10,1,8,30,13.90,{ali_spot},cn-beijing,cn-beijing-i,CNY\n"
    )
    (folder / "lc-east.csv").write_text(f"{HEADER}\ng4dn.xlarge,T4,1,4,16,0.526,,us-east-1,us-east-1a\n")
    policy = POLICY.format(heartbeat_timeout=heartbeat_timeout, spot=str(spot).lower())
    (folder / "policy.yaml").write_text(policy)
    (folder / "tokens.yaml").write_text(f"tokens:\n  - {{tenant: crash-lab, sha256: {hash_token(TOKEN)}}}\n")
    boot = f"heartbeat_s: 1, report_give_up_s: {report_give_up_s}, report_backoff_max_s: 1"
    aws = (
        f"{{endpoint_url: '{moto_url}', access_key_id: AKIDCRASH, secret_access_key: secret, "
        f"image_id: {AMI}, live_prices: false, {boot}}}"
    )
    ali = (
        f"{{endpoint: '{ecs_address}', protocol: http, access_key_id: ak-test, "
        f"access_key_secret: {ECS_KEYS['ak-test']}, image_id: m-szb-base, live_prices: false, {boot}}}"
    )
    lc_port = lc_endpoint_port or int(moto_url.rsplit(":", 1)[1])
    lc = (
        f"{{driver: ec2, driver_args: [AKIDCRASH, secret], driver_kwargs: {{region: us-east-1, "
        f"host: 127.0.0.1, port: {lc_port}, secure: false}}, image: {AMI}, userdata_kwarg: ex_userdata, "
        f"metadata_kwarg: ex_metadata, {boot}}}"
    )
    extra = f"store: {{dsn: '{store_dsn}'}}\n" if store_dsn else ""
    extra += f"agent_endpoint: http://{agent_endpoint}\n" if agent_endpoint else ""
    (folder / "broker.yaml").write_text(
        textwrap.dedent(f"""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        agent_http_listen: 127.0.0.1:{agent_port}
        dispatch: {{poll_interval_s: 0.2, reconcile_interval_s: {reconcile_interval_s}}}
        sites:
          onprem: {{cancel_grace_s: 1}}
          aws-east: {aws}
          aliyun-bj: {ali}
          lc-east: {lc}
        """)
        + extra
    )
    return folder / "broker.yaml"


class Broker(BrokerProcess):
    """A broker process whose store the test can open (as a second process would).

    Starting waits longer than `BrokerProcess` does: the chaos rounds restart it many times
    on a machine busy with the instances it launched."""

    def __init__(self, config: Path, store_dsn: str | None = None) -> None:
        super().__init__(config)
        self.store_dsn = store_dsn

    def start(self, port: int = 0, timeout: float = 120.0) -> int:
        return super().start(port=port, timeout=timeout)

    def open_store(self) -> JobStore:
        if self.store_dsn:
            return PostgresStore(self.store_dsn)
        return SqliteStore(self.config.parent / "data" / "broker.db")
