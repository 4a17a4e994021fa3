"""The shipped Grafana dashboard reads store-wide gauges the way the README says: one instance's copy.

Found by a held-out review of issue 12: it summed `szb_queue_jobs` over every scraped replica,
so with two API replicas the queue depth showed double.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parents[1] / "docker" / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "shangzhuang-broker.json"
STORE_WIDE = ("szb_queue_jobs", "szb_spend_month", "szb_budget_left")
"""Gauges each process reads from the whole store at scrape time (README, *Metrics*)."""


def _queries(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [str(v) for k, v in node.items() if k == "expr"]
        return own + [q for v in node.values() for q in _queries(v)]
    if isinstance(node, list):
        return [q for v in node for q in _queries(v)]
    return []


def test_store_wide_gauges_are_never_summed_across_instances() -> None:
    queries = _queries(json.loads(DASHBOARD.read_text()))
    assert any("szb_queue_jobs" in q for q in queries)
    for query in queries:
        for gauge in STORE_WIDE:
            # Summed straight from the raw series (an aggregation other than max over them).
            summed = re.search(rf"\b(sum|avg|count)\s*(by\s*\([^)]*\)\s*)?\(\s*{gauge}\b", query)
            assert summed is None, f"{query!r} sums {gauge} over every replica; take max by instance first"
