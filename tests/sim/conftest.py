"""A tiny world for hand-computed simulations: one on-prem GPU partition and one cloud offer."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from broker.policy import Policy, load_policy
from broker.sim.scenario import Delay, Scenario

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

POLICY = """version: 1
currency: CNY
objective: {{price: 1.0, wait_hour_cost: 40, carbon_g_cost: 0.0, preference: 1.0}}
accelerators: {configs}/accelerators.yaml
regimes: {configs}/regimes.yaml
sites:
  - id: onprem
    adapter: slurm
    provider: onprem
    region: here
    country: CN
    residency: cn-mainland
    carbon_gco2_kwh: 100
    partitions:
      - {{name: gpu, accelerator: A800, count_per_node: {gpus}, nodes: 1, price_hour: 2.0,
          cpus_per_node: 64, memory_gb_per_node: 512}}
  - id: cloud
    adapter: alibaba
    provider: aliyun-cn
    region: r1
    country: CN
    residency: cn-mainland
    carbon_gco2_kwh: 500
    catalog: {{file: cloud.csv, region: r1, currency: CNY}}
tenants:
  - {{id: t1, kind: university, entity_country: CN, monthly_budget: 100000}}
burst:
  max_wait: {{default: 30m}}
  hysteresis: 0s
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""

CATALOG = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone,Currency
gpu.small,A800,1,8,64,10.0,,r1,r1-a,CNY
gpu.double,A800,2,16,128,20.0,,r1,r1-a,CNY
"""


def sim_policy_text() -> str:
    """configs/policy-sim.yaml with the files it names (accelerators, regimes, the catalog) made
    absolute, for a test to edit and write in a folder of its own."""
    text = (CONFIGS / "policy-sim.yaml").read_text(encoding="utf-8")
    for name in ("accelerators.yaml", "regimes.yaml", "catalog/"):  # (`: x` covers `file: x` too)
        text = text.replace(f": {name}", f": {CONFIGS}/{name}")
    return text


def tiny_policy(folder: Path, gpus: int = 1, wait_model: str | None = None) -> Policy:
    (folder / "cloud.csv").write_text(CATALOG)
    path = folder / "policy.yaml"
    text = POLICY.format(configs=CONFIGS, gpus=gpus)
    if wait_model is not None:
        text = text.replace("  hysteresis: 0s\n", f"  hysteresis: 0s\n  wait_model: {wait_model}\n")
    path.write_text(text)
    return load_policy(path)


def table_row(text: str, sep: str, strategy: str) -> dict[str, str]:
    """The strategy's row of a table (rich `│` or markdown `|`), keyed by the header's names."""
    lines = text.splitlines()
    header = next(_cells(t, sep) for t in lines if "strategy" in t and sep in t)
    row = next(_cells(t, sep) for t in lines if t.strip().strip(sep).strip().startswith(strategy + " "))
    return dict(zip(header, row, strict=True))


def _cells(line: str, sep: str) -> list[str]:
    return [c.strip() for c in line.strip().strip(sep).split(sep)]


def run_bench(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`bench/<name>.py ARGS` run as a user runs it, from the checkout, its output captured."""
    root = CONFIGS.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, f"bench/{name}.py", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def load_bench(name: str) -> ModuleType:
    """`bench/<name>.py` loaded as a module (bench/ is scripts, not a package), run afresh each call."""
    spec = importlib.util.spec_from_file_location(name, CONFIGS.parent / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return tiny_policy(tmp_path)


@pytest.fixture
def scenario() -> Scenario:
    """Fixed 60 s provisioning, no stock-outs, no spot."""
    return Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
