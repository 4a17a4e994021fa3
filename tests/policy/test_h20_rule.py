"""The shipped `h20-is-informed` rule covers every party the April 2025 letter names: China
(incl. Hong Kong), Macau and D:5 (reference: export-controls-and-catalog.md, 2025-04-09).

Found by a review: the rule tested D:5 alone, so a Macau-headquartered tenant got H20 at a
US-operated site; Macau is its own country group (`Macau: [MO]` in regimes.yaml), not in D:5.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
Cli = Callable[[list[str]], int]
H20_ROW = "p99.h20,H20,1,8,64,4.0,,us-east-1,use1-az1\n"
TENANTS = {"mo-lab": "MO", "hk-lab": "HK", "cn-lab": "CN", "sg-lab": "SG"}


@pytest.mark.parametrize("shipped", ["policy.yaml", "policy-sim.yaml"])
def test_h20_at_a_us_operated_site_is_denied_to_macau_hong_kong_and_d5_tenants(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str], shipped: str
) -> None:
    shutil.copytree(CONFIGS, tmp_path / "configs")
    folder = tmp_path / "configs"
    with (folder / "catalog" / "aws_gpu_vms.csv").open("a") as f:
        f.write(H20_ROW)  # the shipped catalog sells no H20 in us-east-1
    policy = folder / shipped
    text = policy.read_text()
    extra = "".join(f"  - {{id: {t}, kind: institute, entity_country: {c}}}\n" for t, c in TENANTS.items())
    policy.write_text(text.replace("tenants:\n", "tenants:\n" + extra, 1))
    job = tmp_path / "h20.yaml"
    job.write_text("name: h20\ncommand: ['true']\nruntime_estimate: 1h\n"
                   "resources: {accelerators: {count: 1, any_of: [H20]}}\n")
    verdicts = {}
    for tenant in TENANTS:
        cli(["explain", str(job), "--policy", str(policy), "--tenant", tenant, "-o", "json"])
        body = json.loads(capsys.readouterr().out)
        offers = [o for o in body["offers"] if o["site"] == "aws-us-east-1" and o["accelerator"] == "H20"]
        assert offers, tenant
        verdicts[tenant] = {r["rule"] for o in offers for r in o["reasons"]} if not any(
            o["allowed"] for o in offers) else "allowed"
    assert verdicts == {"mo-lab": {"h20-is-informed"}, "hk-lab": {"h20-is-informed"},
                        "cn-lab": {"h20-is-informed"}, "sg-lab": "allowed"}
