from __future__ import annotations

from pathlib import Path

import pytest

from broker.model import Offer
from broker.policy import Policy, load_policy
from broker.policy.offers import static_offers

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(CONFIGS / "policy.yaml")


@pytest.fixture(scope="session")
def offers(policy: Policy) -> list[Offer]:
    return static_offers(policy)
