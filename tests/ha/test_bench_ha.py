"""`bench/ha.py` keeps working: a short run (two SIGKILLs) reports every figure; the README's
figures come from the full two-minute run and are never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.brokerproc import ROOT


def test_a_short_bench_run_reports_takeovers_and_counts(pg_server: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "bench/ha.py",
            "--duration",
            "10",
            "--kill-every",
            "5",
            "--rate",
            "2",
            "--burst",
            "5",
            "--drain",
            "60",
            "--json",
        ],
        cwd=ROOT,
        env={**os.environ, "SZB_PG_DSN": pg_server, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.stdout.strip(), out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["kills"] == 2 and len(result["takeover_s"]) == 2
    assert result["acknowledged"] > 0 and result["lost_acknowledged"] == 0
    for key in (
        "takeover_p99_s",
        "double_dispatch",
        "leaked_instances",
        "deposed_backend_calls",
        "unfinished",
    ):
        assert key in result


class _Scheduler:
    """A scheduler as `take_over` sees it: what it last printed (no process behind it)."""

    role = "scheduler"

    def __init__(self, epochs: list[int], leading: bool, then: _Scheduler | None = None) -> None:
        self._epochs, self._leading, self.then = epochs, leading, then

    def running(self) -> bool:
        return True

    def leading(self) -> bool:
        return self._leading

    def epochs(self) -> list[int]:
        return self._epochs

    def text(self) -> str:
        return ""

    def pause(self) -> None:  # the standby takes over while this one sleeps
        if self.then is not None:
            self.then._epochs, self.then._leading = [*self.then._epochs, self._epochs[-1] + 1], True

    def resume(self) -> None:
        pass

    def kill(self) -> None:
        self.pause()


def test_a_resumed_leader_that_prints_its_standby_late_is_counted_not_a_crash() -> None:
    """Found by a review of issue 13: the bench died with `two schedulers say they lead` (and no
    JSON) when the last round's resumed leader had not printed `standby` yet."""
    from bench.ha import Candidates, take_over
    from tests.ha.conftest import Cluster

    standby = _Scheduler([], leading=False)
    current = _Scheduler([4], leading=True, then=standby)
    late = _Scheduler([3], leading=True)  # resumed, deposed, its `standby` line still to come
    cluster = Cluster.__new__(Cluster)
    cluster.nodes = [late, current, standby]  # type: ignore[list-item]
    candidates = Candidates(cluster)
    assert take_over(candidates, True, []) >= 0
    assert standby.epochs() == [5]
    assert candidates.late_standby == 1
