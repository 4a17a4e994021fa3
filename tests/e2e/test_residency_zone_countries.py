"""`szb serve` refuses a residency zone that lists no countries, and a site outside its zone's.

Found by a review: with `zones: {cn-mainland: {countries: []}}` a `country: US` site could claim
`residency: cn-mainland`, the policy loaded, and a job confined to mainland China ran in the US.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import POLICY, write_broker_config
from tests.e2e.test_policy_refused_at_start import serve_refused

US_SITE = """\
  - id: us
    adapter: local
    country: US
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 4, price_hour: 1.0}
"""


def test_a_zone_without_countries_and_a_us_site_in_it_are_refused_at_start(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    policy = tmp_path / "policy.yaml"
    text = POLICY.replace("tenants:\n", US_SITE + "tenants:\n", 1)
    policy.write_text(text.replace("{countries: [CN]}", "{}"))
    lines = text.splitlines()
    site_line = next(n for n, line in enumerate(lines, 1) if "country: US" in line) + 1
    zone_line = next(n for n, line in enumerate(lines, 1) if "zones:" in line)
    done = serve_refused(config)
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert f"{policy}:{site_line}:16: error: sites.1.residency: site country US is not in zone" in said, said
    assert f"{policy}:{zone_line}:" in said and "zone 'cn-mainland' lists no countries" in said, said
