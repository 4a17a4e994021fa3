"""Each policy site's adapter, built from its config: at start, and again for a cloud site a
policy reload adds or changes (its catalog's types, zones and prices live in the adapter).

On-prem adapters are built once: they hold running work (local runners, a Slurm session)
and their capacity is read live; a reload that changes their config (a local partition's
size) reaches those that can take it in place (`adapters.base.Reconfigurable`).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import Adapter, Reconfigurable
from adapters.bootstrap import bootstrap_options
from adapters.registry import AdapterRegistry
from broker.burst import is_onprem
from broker.config import ConfigFileError, site_settings
from broker.dispatch.offers import site_configs
from broker.model import SiteId
from broker.policy import Policy
from broker.yamlfile import PolicyError, parse_yaml, position

log = logging.getLogger(__name__)


@dataclass
class SiteAdapters:
    """Builds site adapters and remembers the config each was built from."""

    registry: AdapterRegistry
    data_dir: Path
    settings: Mapping[str, Mapping[str, Any]]
    """broker.yaml's `sites:` (merged over each site's policy config)."""
    on_error: Callable[[SiteId, str], None]
    """A site whose adapter could not be built: it is marked unhealthy with the reason."""
    skip: Collection[SiteId] = ()
    """Sites whose adapters the caller built (tests inject endpoints this way)."""
    config_file: Path | None = None
    """The broker.yaml `settings` came from (its lines are named in warnings)."""
    broker_id: str | None = None
    """The store's broker id (`JobStore.broker_id`): each site's `broker_id` unless it sets one.
    A fixed default let two brokers on one cloud account take each other's instances for orphans."""
    built: dict[SiteId, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    adapters: dict[SiteId, Adapter] = field(default_factory=dict)
    """What this builder built, unwrapped (on-prem ones are reconfigured in place on reload)."""
    unread: set[SiteId] = field(default_factory=set)
    """Sites left out for a `KEY_from_file`/`KEY_from_env` that could not be read (a secret
    mounted after the start): built again at the next reload or SIGHUP, their config unchanged."""

    def build_all(self, policy: Policy) -> dict[SiteId, Adapter]:
        """Every site's adapter (a site that cannot be built is left out, marked unhealthy)."""
        out: dict[SiteId, Adapter] = {}
        if self.broker_id is not None:
            log.info("what this broker starts is tagged szb:broker=%s (a site's broker_id overrides it)",
                     self.broker_id)
        self.warn_unmatched(policy)
        for site_id, name, config in site_configs(policy):
            if site_id not in self.skip and (adapter := self._build(site_id, name, config)) is not None:
                out[site_id] = adapter
                self._check_heartbeat(policy, site_id, config)
        return out

    def changed(self, policy: Policy) -> dict[SiteId, Adapter]:
        """Adapters for the cloud sites `policy` adds or whose config (catalog, region) it changes."""
        self.warn_unmatched(policy)
        out: dict[SiteId, Adapter] = {}
        for site_id, name, config in site_configs(policy):
            same = self.built.get(site_id) == (name, config) and site_id not in self.unread
            if same or site_id in self.skip or (is_onprem(policy, site_id) and site_id not in self.unread):
                continue
            adapter = self._build(site_id, name, config)
            if adapter is not None:
                log.info("site %s: adapter built for the reloaded policy", site_id, extra={"site": site_id})
                out[site_id] = adapter
                self._check_heartbeat(policy, site_id, config)
        return out

    def reconfigure_onprem(self, policy: Policy) -> list[SiteId]:
        """Hand on-prem adapters whose config `policy` changed their new config; the sites done."""
        done: list[SiteId] = []
        for site_id, name, config in site_configs(policy):
            adapter = self.adapters.get(site_id)
            if self.built.get(site_id) == (name, config) or not is_onprem(policy, site_id):
                continue
            if not isinstance(adapter, Reconfigurable) or self.built.get(site_id, ("",))[0] != name:
                continue  # another adapter kind takes a restart
            self.built[site_id] = (name, config)
            adapter.reconfigure(self._merged(site_id, config))
            log.info("site %s: reloaded policy applied to the adapter", site_id, extra={"site": site_id})
            done.append(site_id)
        return done

    def warn_unmatched(self, policy: Policy) -> None:
        """A WARNING for each broker.yaml site `policy` does not name: a misspelt one left the site
        it meant without its settings (run_as, limits, credentials) without a word."""
        # Not refused: the README has a cloud site's settings written before a reload names it.
        for where in unmatched_sites(self.settings, policy, self.config_file):
            log.warning(
                "%s; its settings are unused until the policy (%s) names that site", where,
                policy.hash[:12], extra={"event": "site_settings_unmatched"},
            )

    def _check_heartbeat(self, policy: Policy, site_id: SiteId, config: dict[str, Any]) -> None:
        """Warn of a cloud site whose instances heartbeat too seldom for the policy's timeout: one
        late or lost heartbeat and the broker would take a running instance for lost (and re-run it)."""
        if is_onprem(policy, site_id):
            return
        try:
            every = bootstrap_options(self._merged(site_id, config))["heartbeat_s"]
        except (TypeError, ValueError):  # the adapter refuses such a config itself
            return
        timeout = policy.burst.heartbeat_timeout.total_seconds()
        if every >= timeout / 2:
            log.warning(
                "site %s: heartbeat_s %d (broker.yaml sites: or the policy's adapter config) is not under "
                "half of burst.heartbeat_timeout %gs (the policy): its running instances will be taken "
                "for lost", site_id, every, timeout, extra={"site": site_id},
            )

    def _merged(self, site_id: SiteId, config: dict[str, Any]) -> dict[str, Any]:
        own = {"data_dir": str(self.data_dir)} | ({"broker_id": self.broker_id} if self.broker_id else {})
        return {**own, **config, **site_settings(self.settings.get(site_id, {}))}

    def _build(self, site_id: SiteId, name: str, config: dict[str, Any]) -> Adapter | None:
        self.built[site_id] = (name, config)  # a broken config is not tried again until it changes
        self.unread.discard(site_id)
        try:
            merged = self._merged(site_id, config)
        except ConfigFileError as exc:  # a secret's file or variable: it may come later
            self.unread.add(site_id)
            log.error("site %s disabled until its secret can be read (then SIGHUP): %s", site_id, exc,
                      extra={"site": site_id})
            self.on_error(site_id, f"adapter not built: {exc}"[:300])
            return None
        try:
            adapter = self.registry.create(name, site_id, merged)
            self.adapters[site_id] = adapter
            return adapter
        except Exception as exc:  # one broken site must not stop the broker
            log.error("site %s disabled: %s", site_id, exc, extra={"site": site_id})
            self.on_error(site_id, f"adapter not built: {exc}"[:300])
            return None


def unmatched_sites(settings: Mapping[str, Any], policy: Policy, config_file: Path | None) -> list[str]:
    """`FILE:LINE:COL: sites.X: not a site of the policy (did you mean 'Y'?)` for each site of
    broker.yaml's `sites:` that `policy` does not name."""
    known = [str(s.id) for s in policy.sites]
    missing = [site for site in settings if site not in known]
    if not missing:
        return []
    root = None
    if config_file is not None:
        try:  # (read again: a reload's warning may come long after the start)
            root = parse_yaml(config_file.read_text(encoding="utf-8"), str(config_file))
        except (OSError, UnicodeDecodeError, PolicyError):
            root = None
    out = []
    for site in missing:
        where = str(config_file or "broker.yaml")
        if root is not None:
            where += ":{}:{}".format(*position(root, ["sites", site], key=True))
        close = difflib.get_close_matches(site, known, n=1)
        out.append(f"{where}: sites.{site}: not a site of the policy"
                   + (f" (did you mean {close[0]!r}?)" if close else ""))
    return out
