"""The chaos harness in the suite: 8 SIGKILLs of `szb serve` during a 16-job burst, on SQLite
and on PostgreSQL; nothing may be lost, duplicated, re-run, rewritten or left behind.

Issue 11, "the project's own chaos harness" (`bench/chaos.py` runs longer series of rounds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash.chaos import ChaosPlan, run_round
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_random_sigkills_during_a_burst_lose_rerun_and_leak_nothing(
    store: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    moto: MotoFront,
    ecs_server: EcsEndpoint,
    ecs: EcsCloud,
) -> None:
    dsn = request.getfixturevalue("pg_dsn") if store == "postgresql" else None
    report = run_round(
        ChaosPlan(jobs=16, kills=8, seed=7), tmp_path, moto, ecs, ecs_server.address, store_dsn=dsn
    )
    assert report.kills == 8 and report.jobs == 16
    assert report.problems() == {}, "\n".join(report.details)
    assert report.instances > 0  # the burst really reached the clouds
