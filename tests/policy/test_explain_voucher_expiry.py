"""Offline `szb explain` honours a voucher's `expires` day (Beijing time), as the live broker does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst.money import BEIJING

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
JOB = """name: finetune
command: [python, train.py]
runtime_estimate: 6h
data_residency: cn-mainland
resources:
  accelerators: {count: 8, any_of: [A800, H800]}
"""


def explain_offline(folder: Path, expires: date) -> dict[str, object]:
    """`szb explain JOB.yaml --policy FILE --tenant zhipu-sme -o json` (no broker), with zhipu-sme's
    40 % voucher (on-prem and Wulanchabu) last valid on `expires`."""
    configs = folder / f"configs-{expires.isoformat()}"
    shutil.copytree(CONFIGS, configs)
    policy = configs / "policy.yaml"
    marker = "        discount: 0.4"
    text = policy.read_text()
    assert marker in text
    policy.write_text(text.replace(marker, f"        expires: {expires.isoformat()}\n{marker}"))
    job = folder / "job.yaml"
    job.write_text(JOB)
    args = ["explain", str(job), "--policy", str(policy), "--tenant", "zhipu-sme", "-o", "json"]
    env = {k: v for k, v in os.environ.items() if k != "SZB_SERVER"}
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    body: dict[str, object] = json.loads(done.stdout)
    return body


def voucher_terms(body: dict[str, object]) -> dict[str, float]:
    offers = body["offers"]
    assert isinstance(offers, list)
    return {f"{o['site']}/{o['instance_type']}": o["terms"]["voucher"] for o in offers if o["allowed"]}


def test_an_expired_voucher_gives_no_discount_offline(tmp_path: Path) -> None:
    today = datetime.now(BEIJING).date()
    valid = voucher_terms(explain_offline(tmp_path, today + timedelta(days=1)))
    assert valid["shangzhuang-onprem/a800"] < 0  # the voucher pays 40 % on-prem until it expires
    expired = explain_offline(tmp_path, today - timedelta(days=1))
    assert set(voucher_terms(expired).values()) == {0.0}
    chosen = expired["chosen"]
    assert isinstance(chosen, dict) and chosen["terms"]["cost"] > 0
    assert chosen["score"] == pytest.approx(sum(chosen["terms"].values()))  # the full price, nothing off


def test_offline_explain_refuses_a_burst_the_tenants_monthly_budget_cannot_pay(tmp_path: Path) -> None:
    """Held-out review: offline `szb explain` read only the vouchers, so a 10 h A10 burst (139 CNY)
    showed as `run (burst)` for a tenant whose whole month is 20 CNY; live it waits for money."""
    from tests.burst.conftest import write_policy

    policy = write_policy(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: a10\ncommand: [python, x.py]\nruntime_estimate: 10h\nmax_wait: 0s\nspot: never\n"
        "resources:\n  accelerators: {count: 1, any_of: [A10]}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SZB_SERVER"}
    done = {}
    for tenant in ("poor", "lab"):  # lab has no budget: it bursts
        args = ["explain", str(job), "--policy", str(policy), "--tenant", tenant, "-o", "json"]
        out = subprocess.run(
            [sys.executable, "-m", "broker.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        done[tenant] = json.loads(out.stdout)["decision"]
    assert done["lab"]["action"] == "run" and done["lab"]["burst"], done["lab"]
    poor = done["poor"]
    assert poor["action"] == "wait", poor
    assert any("in cash, 20.00 left this month" in r for r in poor["reasons"]), poor["reasons"]
