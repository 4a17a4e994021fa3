"""Find adapters through the `shangzhuang_broker.adapters` entry-point group, lazily.

An adapter whose SDK is not installed is disabled on its own, with the import error kept as
the reason, so the broker starts with whatever SDKs the host has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, cast

from adapters.base import Adapter, AdapterFactory, ConfigError
from broker.model import SiteId

GROUP = "shangzhuang_broker.adapters"
log = logging.getLogger(__name__)


@dataclass
class AdapterRegistry:
    """Adapter factories by name; `disabled` holds the reason for each one that failed to load."""

    factories: dict[str, AdapterFactory] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)

    @classmethod
    def discover(cls) -> AdapterRegistry:
        """Load every registered entry point; an import failure disables only that adapter."""
        registry = cls()
        for ep in entry_points(group=GROUP):
            try:
                registry.factories[ep.name] = cast(AdapterFactory, ep.load())
            except ImportError as exc:
                reason = f"adapter {ep.name!r} disabled: {exc} (install its SDK to enable it)"
                registry.disabled[ep.name] = reason
                log.warning(reason)
        return registry

    def create(self, name: str, site: SiteId, config: Mapping[str, Any]) -> Adapter:
        """Build the adapter for one site; ConfigError names what is missing."""
        if name in self.disabled:
            raise ConfigError(site, "AdapterDisabled", self.disabled[name])
        factory = self.factories.get(name)
        if factory is None:
            known = ", ".join(sorted(self.factories)) or "none"
            raise ConfigError(site, "UnknownAdapter", f"no adapter named {name!r} (known: {known})")
        return factory(site, config)
