"""The embedded default (broker/defaults/) is the shipped single-host policy, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import BrokerConfig
from broker.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("embedded", "shipped"),
    [
        ("policy.yaml", "policy-local.yaml"),
        ("accelerators.yaml", "accelerators.yaml"),
        ("regimes.yaml", "regimes.yaml"),
    ],
)
def test_embedded_copy_matches_configs(embedded: str, shipped: str) -> None:
    assert (ROOT / "broker" / "defaults" / embedded).read_bytes() == (
        ROOT / "configs" / shipped
    ).read_bytes(), f"broker/defaults/{embedded} drifted from configs/{shipped}: copy it over"


def test_embedded_default_policy_loads_with_a_local_site() -> None:
    policy = load_policy(BrokerConfig().policy_path())
    [site] = [s for s in policy.sites if s.adapter == "local"]
    assert any(p.accelerator == "A800" for p in site.partitions)
