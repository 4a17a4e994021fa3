"""The routing policy: schema, loading with file:line:col errors, hot reload."""

from __future__ import annotations

from broker.policy._load import RANKERS, combined_hash, load_policy, load_policy_text
from broker.policy._policy import Hardware, Policy, SiteFacts
from broker.policy.watcher import PolicyWatcher
from broker.yamlfile import PolicyError, Problem

__all__ = [
    "RANKERS",
    "Hardware",
    "Policy",
    "PolicyError",
    "PolicyWatcher",
    "Problem",
    "SiteFacts",
    "combined_hash",
    "load_policy",
    "load_policy_text",
]
