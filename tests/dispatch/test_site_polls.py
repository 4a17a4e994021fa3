"""`SitePolls`: a site whose status calls fail is polled after 2 s, doubling to a minute; one
attempt's own error backs nothing off."""

from __future__ import annotations

from adapters.base import ConfigError, TransientError
from broker.dispatch.site_polls import SitePolls
from broker.model import SiteId

SITE = SiteId("slurm-a")


def test_back_off_doubles_to_a_minute_and_ends_when_the_site_answers() -> None:
    polls = SitePolls()
    down = TransientError(SITE, "Timeout", "connection refused")
    assert polls.due(SITE, 0.0)
    assert polls.failed(SITE, 0.0, down)
    assert polls.failed(SITE, 0.0, down)  # another attempt of the same pass: no second doubling
    assert not polls.due(SITE, 1.9) and polls.due(SITE, 2.0)
    now, gaps = 2.0, []
    for _ in range(8):
        polls.failed(SITE, now, down)
        nxt = next(t for t in (now + x / 10 for x in range(1, 1000)) if polls.due(SITE, t))
        gaps.append(round(nxt - now))
        now = nxt
    assert gaps == [4, 8, 16, 32, 60, 60, 60, 60]
    polls.answered(SITE)
    assert polls.due(SITE, now)
    assert not polls.failed(SITE, now, ConfigError(SITE, "BadJob", "this attempt's own"))
    assert polls.due(SITE, now)
