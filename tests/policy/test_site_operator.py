"""An AWS region abroad is still operated from the US: a site there must say so, or the export rule is off.

`operator_country` defaults to the site's country, so an operator copying the shipped aws-us-east-1
site to Singapore or Hong Kong (changing region and country) silently made it 'operated from SG':
the export rule for US-operated sites (EAR 3A090 via US IaaS, reference 1.4) no longer refused a
D:5-headquartered tenant's H100 jobs there. `szb policy check` now refuses such a site at its line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[[list[str]], int]

POLICY = """\
version: 1
currency: CNY
fx: {{USD: 7.2}}
sites:
  - id: aws-sg
    adapter: aws
    adapter_config: {{region: ap-southeast-1}}
    provider: aws
    region: ap-southeast-1
    country: SG
    residency: global{operator}
    catalog: {{file: catalog/h100.csv, region: ap-southeast-1, currency: USD}}
  - id: aws-cn
    adapter: aws
    adapter_config: {{region: cn-north-1, partition: aws-cn}}
    provider: aws-cn
    region: cn-north-1
    country: CN
    residency: global
    catalog: {{file: catalog/h100.csv, region: cn-north-1, currency: USD}}
tenants:
  - {{id: pku, kind: university, entity_country: CN}}
compliance:
  export:
    id: us-export-3a090
    operator_countries: [US]
    tenant_country_groups: ["D:5"]
    classes: [3A090.a]
"""

CATALOG = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone
p5.48xlarge,H100,8,192,2048,98.32,,ap-southeast-1,apse1-az1
p5.48xlarge,H100,8,192,2048,98.32,,cn-north-1,cnn1-az1
"""

JOB = """\
name: h100
command: [python, train.py]
runtime_estimate: 1h
resources: {accelerators: {count: 8, any_of: [H100]}}
"""


def _write(write_policy: Callable[[str], Path], operator: str) -> Path:
    path = write_policy(POLICY.format(operator=operator))
    (path.parent / "catalog" / "h100.csv").write_text(CATALOG)
    return path


def test_an_aws_site_abroad_without_operator_country_is_an_error(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(write_policy, "")
    assert cli(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:10:14: error: sites.0.operator_country: site aws-sg is in AWS's global partition" in err
    assert "write operator_country: US" in err
    assert "sites.1" not in err  # the China partition is operated by Sinnet / NWCD: its country is right
    assert err.count("\n") == 1


def test_with_operator_country_the_export_rule_applies_there(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(write_policy, "\n    operator_country: US")
    assert cli(["policy", "check", str(path)]) == 0
    job = path.parent / "job.yaml"
    job.write_text(JOB)
    capsys.readouterr()
    cli(["explain", str(job), "--policy", str(path), "--tenant", "pku", "-o", "json"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["chosen"]["site"] == "aws-cn"
    offers = [o for o in plan["offers"] if o["site"] == "aws-sg"]
    assert offers and not any(o["allowed"] for o in offers)
    assert {o["reasons"][0]["rule"] for o in offers} == {"us-export-3a090"}


def test_an_operator_may_still_say_another_country(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An explicit operator_country is the operator's statement (a reseller, say) and is taken as written."""
    path = _write(write_policy, "\n    operator_country: SG")
    assert cli(["policy", "check", str(path)]) == 0


LIBCLOUD_SITE = """\
version: 1
currency: CNY
fx: {{USD: 7.2}}
sites:
  - id: cloud-hk
    adapter: libcloud
    adapter_config: {{driver: {driver}}}
    region: asia-east2
    country: HK
    residency: global{operator}
    catalog: {{file: catalog/h100.csv, region: asia-east2, currency: USD}}
tenants:
  - {{id: hk-lab, kind: university, entity_country: HK}}
compliance:
  export:
    id: us-export-3a090
    operator_countries: [US]
    tenant_country_groups: ["D:5"]
    classes: [3A090.a]
"""


US_DRIVERS = [("gce", "Google"), ("azure_arm", "Microsoft"), ("ec2", "AWS")]


@pytest.mark.parametrize(("driver", "company"), US_DRIVERS)
def test_a_us_cloud_through_libcloud_abroad_without_operator_country_is_an_error(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str], driver: str,
    company: str,
) -> None:
    """Review: the check above knew only the aws adapter. A Hong Kong site on libcloud's gce (or
    azure_arm, or ec2) driver defaulted to 'operated from HK', and `szb explain` gave a D:5 tenant
    H100s there with `policy check` silent. Now it is the same error; said, the export rule denies."""
    path = write_policy(LIBCLOUD_SITE.format(driver=driver, operator=""))
    (path.parent / "catalog" / "h100.csv").write_text(CATALOG.replace("ap-southeast-1", "asia-east2"))
    assert cli(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    said = f"{path}:9:14: error: sites.0.operator_country: site cloud-hk runs on libcloud's {driver}"
    assert said in err, err
    assert company in err and "write operator_country: US" in err
    path = write_policy(LIBCLOUD_SITE.format(driver=driver, operator="\n    operator_country: US"))
    assert cli(["policy", "check", str(path)]) == 0
    job = path.parent / "job.yaml"
    job.write_text(JOB)
    capsys.readouterr()
    cli(["explain", str(job), "--policy", str(path), "--tenant", "hk-lab", "-o", "json"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["chosen"] is None
    assert {o["reasons"][0]["rule"] for o in plan["offers"]} == {"us-export-3a090"}


def test_a_libcloud_site_of_a_cloud_run_from_elsewhere_is_taken_as_written(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_policy(LIBCLOUD_SITE.format(driver="aliyun_ecs", operator=""))
    (path.parent / "catalog" / "h100.csv").write_text(CATALOG.replace("ap-southeast-1", "asia-east2"))
    assert cli(["policy", "check", str(path)]) == 0, capsys.readouterr().err
