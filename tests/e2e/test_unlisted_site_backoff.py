"""A cloud site whose listing keeps failing with an auth or config error is retried with back-off.

Found by a README review: with the shipped `configs/broker.yaml`, four sites without credentials
were listed again on every dispatcher turn (every 2 s, and once more per submission), for ever:
120 warning lines a minute. At start such a site counts as unreachable; a later listing's auth
error was left out of the report, so the site's retry time was never moved on.

Found by a review of the operator's view: even with back-off, six unreachable sites wrote 90
warnings in 11 minutes, the same words each time. An outage is warned of once (again only if its
error changes); the retries are debug lines.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.aws_nowhere import CATALOG_ONLY, aws_nowhere


def test_a_site_without_credentials_is_listed_again_with_back_off(tmp_path: Path) -> None:
    broker = aws_nowhere(tmp_path, CATALOG_ONLY, metrics=False)
    broker.extra_env["SZB_LOG_LEVEL"] = "DEBUG"
    broker.start(timeout=120)
    try:
        time.sleep(20)
    finally:
        broker.stop()
    tries = [line for line in broker.output if "aws-east" in line and "could not be listed" in line]
    # At start, then after 2, 4, 8 (and 16) s: five at most in 20 s, not one every 2 s.
    assert 2 <= len(tries) <= 5, "".join(tries)
    warned = [line for line in tries if " WARNING " in line]
    assert len(warned) == 1 and "said again only if this changes" in warned[0], "".join(tries)
    assert all(" DEBUG " in line for line in tries if line not in warned), "".join(tries)
