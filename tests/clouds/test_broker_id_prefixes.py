"""Brokers whose ids extend one another (`prod`, `prod-eu`) on one account keep to their own.

Found by a held-out review of issue 4: the libcloud adapter and the gangs' placement groups took
ownership from a name prefix alone (`szb-<broker_id>-`), so broker `prod` listed `prod-eu`'s node
and placement group as its own and its reconciler destroyed both as orphans; and a libcloud site
without tags cut a long broker id's node name at 63 characters, token and all, so the token read
back matched no live attempt and the reconciler killed that attempt's node. Moto's EC2, through
libcloud's EC2 driver and boto3.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.aws import AwsAdapter
from adapters.libcloud import LibcloudAdapter
from broker.clock import SystemClock
from broker.dispatch.reconcile import reconcile
from broker.model import SiteId
from broker.store import SqliteStore
from tests.clouds.conftest import launch
from tests.clouds.test_libcloud import ec2_config
from tests.doubles.moto_front import MotoFront

NOW = datetime(2026, 5, 1, tzinfo=UTC)
TOKEN = "0123456789abcdef0123456789abcdef"  # as the broker makes them: 16 random bytes in hex


def _reconcile_empty_store(tmp_path: Path, site: SiteId, adapter: Any) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    try:
        asyncio.run(reconcile(store, {site: adapter}, SystemClock()))
    finally:
        store.close()


@pytest.mark.parametrize("tagged", [True, False], ids=["tags", "name-only"])
def test_a_broker_leaves_the_nodes_of_a_broker_whose_id_extends_its_own(
    moto: MotoFront, tmp_path: Path, tagged: bool
) -> None:
    site = SiteId("lc")
    configs = [ec2_config(moto, broker_id=b) for b in ("prod", "prod-eu")]
    if not tagged:
        for config in configs:
            del config["metadata_kwarg"]
    prod, eu = (LibcloudAdapter(site, c) for c in configs)
    node = eu.submit(launch(eu.offers(NOW)[0], TOKEN, job="j-eu", attempt="a-eu"))
    assert [o.token for o in eu.list_owned()] == [TOKEN]
    assert prod.list_owned() == []
    _reconcile_empty_store(tmp_path, site, prod)
    assert eu.status(node).state.value == "RUNNING"


def test_a_long_broker_id_on_a_site_without_tags_keeps_the_whole_token_in_the_name(moto: MotoFront) -> None:
    config = ec2_config(moto, broker_id="shangzhuang-production-beijing")
    del config["metadata_kwarg"]  # the name is the only mark
    adapter = LibcloudAdapter(SiteId("lc"), config)
    node = adapter.submit(launch(adapter.offers(NOW)[0], TOKEN))
    owned = adapter.list_owned()
    assert [(o.backend_id, o.token) for o in owned] == [(node, TOKEN)]
    assert len(adapter.node_name(TOKEN)) <= 63


def test_a_broker_leaves_the_placement_groups_of_a_broker_whose_id_extends_its_own(
    moto: MotoFront, tmp_path: Path
) -> None:
    def config(broker_id: str) -> dict[str, Any]:
        return {
            "region": "us-east-1", "endpoint_url": moto.url, "access_key_id": "AKIDTESTTEST",
            "secret_access_key": "x", "image_id": "ami-12c6146b", "live_prices": False,
            "broker_id": broker_id,
            "instance_types": [
                {"instance_type": "p4d.24xlarge", "accelerator": "A100", "count": 8, "price_per_hour": 32.77}
            ],
        }

    site = SiteId("aws")
    prod, eu = AwsAdapter(site, config("prod")), AwsAdapter(site, config("prod-eu"))
    group = eu.create_group(launch(eu.offers(NOW)[0], TOKEN))
    assert [o.token for o in eu.owned_groups()] == [TOKEN]
    assert prod.owned_groups() == []
    _reconcile_empty_store(tmp_path, site, prod)
    assert [o.token for o in eu.owned_groups()] == [TOKEN], f"prod deleted {group}"
