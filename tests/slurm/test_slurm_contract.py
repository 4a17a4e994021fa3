"""The Slurm adapter keeps the adapter contract (`tests.adapter_contract`) on the real cluster."""

from __future__ import annotations

import pytest

from adapters.base import Adapter, ConfigError
from adapters.slurm import SlurmAdapter
from tests.adapter_contract import AdapterContract, Refusal
from tests.slurm.conftest import Tracker, launch


class TestSlurmContract(AdapterContract):
    unknown_id = "987654321"
    queues_jobs = True

    @pytest.fixture
    def adapter(self, slurm: Tracker) -> SlurmAdapter:
        return slurm.adapter

    @pytest.fixture
    def refused(self, adapter: Adapter, slurm: Tracker) -> Refusal:
        # A partition slurmctld does not have: Slurm's own refusal, classified by its code.
        wrong = slurm.make(partitions={"nope": "A800"})
        return Refusal(lambda: wrong.submit(launch(("true",))), ConfigError)
