"""Find adapters through the `shangzhuang_broker.adapters` entry-point group, lazily.

An adapter whose SDK is not installed is disabled on its own, with the import error kept as
the reason, so the broker starts with whatever SDKs the host has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from adapters.base import Adapter, AdapterFactory, ConfigError
from broker.model import SiteId

GROUP = "shangzhuang_broker.adapters"
log = logging.getLogger(__name__)


@dataclass
class AdapterRegistry:
    """Adapter factories by name; `disabled` holds the reason for each one that failed to load.

    Entry points are only imported when a site uses them, so an unused SDK costs nothing.
    """

    factories: dict[str, AdapterFactory] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)
    _points: dict[str, EntryPoint] = field(default_factory=dict)

    @classmethod
    def discover(cls) -> AdapterRegistry:
        """Find every registered entry point (imported later, on first use)."""
        return cls(_points={ep.name: ep for ep in entry_points(group=GROUP)})

    def load(self, name: str) -> AdapterFactory | None:
        """The factory for `name`; an import failure disables only that adapter, with the reason."""
        if name in self.factories:
            return self.factories[name]
        ep = self._points.get(name)
        if ep is None or name in self.disabled:
            return None
        try:
            factory = cast(AdapterFactory, ep.load())
        except ImportError as exc:
            reason = f"adapter {name!r} disabled: {exc} (install its SDK to enable it)"
            self.disabled[name] = reason
            log.warning(reason)
            return None
        self.factories[name] = factory
        return factory

    def names(self) -> list[str]:
        return sorted({*self._points, *self.factories})

    def create(self, name: str, site: SiteId, config: Mapping[str, Any]) -> Adapter:
        """Build the adapter for one site; ConfigError names what is missing."""
        factory = self.load(name)
        if name in self.disabled:
            raise ConfigError(site, "AdapterDisabled", self.disabled[name])
        if factory is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(site, "UnknownAdapter", f"no adapter named {name!r} (known: {known})")
        return factory(site, config)
