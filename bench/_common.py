"""What the benches that run a broker share: the policy of a broker on the local executor.

Benches do not import `tests` (they run from a bare checkout's `bench/`); this is their twin of
`tests/local_policy.py`, for the policies benches write.
"""

from __future__ import annotations


def local_policy(tenants: str, *partitions: str, rest: str = "") -> str:
    """One site, `local`, on the local executor in CN with `partitions` (flow mappings), then
    `tenants` (YAML list lines) and `rest` (top-level sections) as given, then CN residency."""
    lines = "".join(f"      - {p}\n" for p in partitions)
    return f"""\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: local
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
{lines}tenants:
{tenants}{rest}compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""


ONE_A800 = "{name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}"

FLOODED_POLICY = local_policy(
    "  - {id: dev, kind: internal, entity_country: CN}\n",
    ONE_A800,
    rest="# A load test floods one tenant on purpose: lift its quotas (see README \"Quotas\").\n"
    "limits: {max_queued_jobs: 10000000, submit_rate: 1000000, submit_burst: 10000000}\n",
)
"""`dev` (a broker's tenant without a tokens file) on one A800, its quotas lifted: the load benches'."""
