"""The local executor keeps the adapter contract (`tests.adapter_contract`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import Adapter, UnsupportedError
from adapters.local import LocalAdapter
from broker.model import AcceleratorRequest, Resources, SiteId
from tests.adapter_contract import NOW, AdapterContract, Refusal, default_request


class TestLocalContract(AdapterContract):
    unknown_id = "att-nobody-started-this"
    queues_jobs = False
    settle_s = 15.0

    @pytest.fixture
    def adapter(self, tmp_path: Path) -> LocalAdapter:
        return LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "cpus": 2,
                                              "accelerators": {"A800": 2}})

    @pytest.fixture
    def refused(self, adapter: Adapter) -> Refusal:
        offer = next(o for o in adapter.offers(NOW) if o.accelerator == "A800")
        request = default_request(offer, "tok-too-large")
        too_large = request.spec.model_copy(update={"resources": Resources(
            cpus=1, memory_gb=0.25, accelerators=AcceleratorRequest(count=4, any_of=("A800",)))})
        return Refusal(lambda: adapter.submit(request.model_copy(update={"spec": too_large})),
                       UnsupportedError)
