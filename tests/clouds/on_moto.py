"""One broker on the cloud doubles (moto behind the fault front, the ECS double): its folder.

`BrokerSetup` writes what `szb serve --config` reads — the policy, its catalogs, the tenants'
tokens and broker.yaml with each site's adapter settings — the same way for every end-to-end
test and bench that runs a broker against the doubles. The `start_broker` fixture
(tests/clouds/conftest.py) writes one into the test's folder, runs it and stops it afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker.auth import hash_token
from tests.brokerproc import ROOT

AMI = "ami-12c6146b"
"""One of moto's stock images."""
ECS_KEYS = {"ak-test": "sk-test"}
"""The access key pair the ECS double accepts."""
A10 = "ecs.gn7i-c8g1.2xlarge"
"""The ECS double's A10 instance type."""
HEADER = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone"
)

POLICY_HEAD = """\
version: 1
currency: CNY
fx: {USD: 7.2}
objective: {price: 1.0, wait_hour_cost: 40}
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
"""
"""A policy's first lines, up to its sites: CNY, USD at 7.2, price and a 40 CNY/h wait cost, the
shipped accelerator and regime catalogs."""

ONPREM_A800 = """\
  - id: onprem
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}
"""
"""An on-prem site (the local executor) with one A800 at 14 CNY/h."""

CN_RESIDENCY = """\
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def sg_lab_tail(*burst: str) -> str:
    """A policy's last lines: the one tenant sg-lab (a Singapore partner), `burst:` with the
    `burst` settings given (YAML lines) and a 1 h heartbeat timeout, the cn-mainland residency zone."""
    settings = "".join(f"  {line}\n" for line in (*burst, "heartbeat_timeout: 1h"))
    return "tenants:\n  - {id: sg-lab, kind: partner, entity_country: SG}\nburst:\n" + settings + CN_RESIDENCY


def cloud_site(site: str, adapter: str, region: str, catalog: str, *, currency: str = "USD",
               spot: bool = False) -> str:
    """A cloud site's policy entry, priced from `catalog` (country and residency by currency)."""
    where = "country: CN, residency: cn-mainland" if currency == "CNY" else "country: US, residency: global"
    return (
        f"  - {{id: {site}, adapter: {adapter}, region: {region}, {where},\n"
        f"     catalog: {{file: {catalog}, region: {region}, currency: {currency}, "
        f"spot: {str(spot).lower()}}}}}\n"
    )


def catalog(*rows: str, currency: bool = False) -> str:
    """A catalog CSV: the header (with a Currency column when the rows carry one), then `rows`."""
    return "\n".join((f"{HEADER},Currency" if currency else HEADER, *rows)) + "\n"


def aws_on_moto(moto_url: str, *, access_key: str = "AKIDTESTTEST", heartbeat_s: float | None = None) -> str:
    """broker.yaml settings of an AWS site served by moto (no live prices)."""
    beat = "" if heartbeat_s is None else f", heartbeat_s: {heartbeat_s:g}"
    return (
        f"{{endpoint_url: '{moto_url}', access_key_id: {access_key}, secret_access_key: secret, "
        f"image_id: {AMI}, live_prices: false{beat}}}"
    )


def ecs_double(address: str) -> str:
    """broker.yaml settings of an Alibaba site served by the ECS double at `address`."""
    return (
        f"{{endpoint: '{address}', protocol: http, access_key_id: ak-test, "
        f"access_key_secret: {ECS_KEYS['ak-test']}, image_id: m-szb-base, live_prices: false}}"
    )


def east_and_beijing(
    moto_url: str, ecs_address: str, *, access_key: str = "AKIDTESTTEST", heartbeat_s: float | None = None
) -> dict[str, str]:
    """The `sites` of a BrokerSetup: aws-east on moto (see `aws_on_moto`), aliyun-bj on the ECS double."""
    return {
        "aws-east": aws_on_moto(moto_url, access_key=access_key, heartbeat_s=heartbeat_s),
        "aliyun-bj": ecs_double(ecs_address),
    }


@dataclass(frozen=True)
class BrokerSetup:
    """Everything a broker on the doubles reads; `write` lays it out in a folder."""

    policy: str
    tokens: Mapping[str, str]
    """Tenant -> its bearer token (tokens.yaml keeps the hashes)."""
    sites: Mapping[str, str]
    """Site id -> its broker.yaml settings (YAML flow text, e.g. `aws_on_moto(...)`)."""
    catalogs: Mapping[str, str] = field(default_factory=dict)
    """File name -> CSV text (`catalog(...)`), next to the policy that names it."""
    dispatch: str = "poll_interval_s: 0.2, reconcile_interval_s: 1.0"
    extra: str = ""
    """More top-level broker.yaml lines (e.g. `agent_http_listen: ...`)."""
    operators: Mapping[str, str] = field(default_factory=dict)
    """Tenant -> the bearer token of an operator (role operator) of that tenant."""

    def write(self, folder: Path) -> Path:
        """The files in `folder`; returns broker.yaml's path."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("accelerators.yaml", "regimes.yaml"):
            shutil.copy(ROOT / "configs" / name, folder / name)
        for name, text in self.catalogs.items():
            (folder / name).write_text(text)
        (folder / "policy.yaml").write_text(self.policy)
        (folder / "tokens.yaml").write_text(
            "tokens:\n"
            + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in self.tokens.items())
            + "".join(
                f"  - {{tenant: {t}, role: operator, sha256: {hash_token(v)}}}\n"
                for t, v in self.operators.items()
            )
        )
        sites = "".join(f"  {site}: {settings}\n" for site, settings in self.sites.items())
        extra = "".join(f"{line}\n" for line in self.extra.splitlines())
        (folder / "broker.yaml").write_text(
            "data_dir: data\npolicy: policy.yaml\ntokens_file: tokens.yaml\n"
            f"dispatch: {{{self.dispatch}}}\n{extra}sites:\n{sites}"
        )
        return folder / "broker.yaml"
