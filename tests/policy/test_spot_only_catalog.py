"""A catalog of spot-only rows makes spot offers: `szb policy check` warned "has no priced rows ...
the site makes no offers" (it does), and a spot offer's restart outlook printed as
"4311231547115194.0 restarts"."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.burst.spot import restarts_text
from broker.cli import main

POLICY = """version: 1
currency: CNY
objective: {price: 1.0, wait_hour_cost: 40}
sites:
  - id: spotsite
    adapter: alibaba
    provider: aliyun-cn
    region: r1
    country: CN
    residency: cn-mainland
    catalog: {file: cat.csv, region: r1, currency: CNY, spot: true}
tenants:
  - {id: a, kind: university, entity_country: CN}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def test_a_spot_only_catalog_is_no_offerless_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cat.csv").write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,"
        "AvailabilityZone\ng.a,A10,1,8,32,,1.0,r1,r1-a\n"
    )
    (tmp_path / "policy.yaml").write_text(POLICY)
    assert main(["policy", "check", str(tmp_path / "policy.yaml")]) == 0
    captured = capsys.readouterr()
    assert "makes no offers" not in captured.err + captured.out
    (tmp_path / "policy.yaml").write_text(POLICY.replace(", spot: true", ", spot: false"))
    assert main(["policy", "check", str(tmp_path / "policy.yaml")]) == 0
    captured = capsys.readouterr()
    assert "has no priced rows for region r1: the site makes no offers" in captured.err + captured.out


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.44, "2.4"), (1250.0, "1,250.0"), (4311231547115194.0, "4.3e+15"),
        (float("inf"), "inf"), (None, "inf"),
    ],
)
def test_restart_counts_read_as_numbers(value: float | None, text: str) -> None:
    assert restarts_text(value) == text
