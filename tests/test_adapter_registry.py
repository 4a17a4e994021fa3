"""Adapters load lazily through entry points; a missing SDK disables only its adapter."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from adapters.base import Adapter, ConfigError
from adapters.registry import GROUP, AdapterRegistry
from broker.model import SiteId


def test_every_shipped_adapter_is_registered() -> None:
    assert {"local", "slurm", "aws", "alibaba", "libcloud"} <= set(AdapterRegistry.discover().names())


def test_missing_sdk_disables_only_that_adapter(tmp_path: object) -> None:
    points = {
        "broken": EntryPoint(name="broken", value="szb_no_such_sdk.adapter:Thing", group=GROUP),
        "local": EntryPoint(name="local", value="adapters.local:LocalAdapter", group=GROUP),
    }
    registry = AdapterRegistry(_points=points)
    with pytest.raises(ConfigError) as err:
        registry.create("broken", SiteId("cloud-x"), {})
    assert "szb_no_such_sdk" in err.value.message and "install its SDK" in err.value.message
    assert "broken" in registry.disabled
    adapter = registry.create("local", SiteId("here"), {"data_dir": str(tmp_path)})
    assert isinstance(adapter, Adapter)


def test_unknown_adapter_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        AdapterRegistry.discover().create("nimbus", SiteId("x"), {})
    assert "no adapter named 'nimbus'" in err.value.message and "aws" in err.value.message
