"""The policy many end-to-end tests run a broker under: one site on the local executor, in CN.

Each test gives what it is about (its partitions, tenants, limits or fair-share settings); the
rest, the site's country and residency zone, is the same everywhere and written once here.
"""

from __future__ import annotations

OBJECTIVE = "objective: {price: 1.0, wait_hour_cost: 40}\n"
"""A line some policies add after the currency: price and a 40 CNY/h wait cost."""

CN_RESIDENCY = """\
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def a800(per_node: int, price_hour: float = 14.0, name: str = "a800") -> str:
    """A partition of A800 nodes with `per_node` cards each."""
    return f"{{name: {name}, accelerator: A800, count_per_node: {per_node}, price_hour: {price_hour}}}"


def cpu(cpus_per_node: int, price_hour: float = 1.0) -> str:
    """A partition of CPU-only nodes."""
    return f"{{name: cpu, price_hour: {price_hour}, cpus_per_node: {cpus_per_node}}}"


def local_policy(
    tenants: str,
    *partitions: str,
    site: str = "local",
    rest: str = "",
    objective: bool = False,
    catalogs: bool = True,
) -> str:
    """The policy text: `site` on the local executor with `partitions` (flow mappings, see `a800`),
    then `tenants` (YAML list lines) and `rest` (top-level sections) as given, then CN residency.
    `catalogs` names the shipped accelerator and regime files, `objective` adds `OBJECTIVE`."""
    head = "version: 1\ncurrency: CNY\n" + (OBJECTIVE if objective else "")
    if catalogs:
        head += "accelerators: accelerators.yaml\nregimes: regimes.yaml\n"
    lines = "".join(f"      - {p}\n" for p in partitions)
    site_text = f"  - id: {site}\n    adapter: local\n    country: CN\n    residency: cn-mainland\n"
    return f"{head}sites:\n{site_text}    partitions:\n{lines}tenants:\n{tenants}{rest}{CN_RESIDENCY}"
