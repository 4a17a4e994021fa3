"""The chaos harness's ledger checks: a job run again after its end, and two runs at once."""

from __future__ import annotations

from typing import Any

from tests.crash.ledger import overlapping_runs, started_again_after_end


def _line(event: str, pid: int, t: float, attempt: str = "a1") -> dict[str, Any]:
    return {"job": "j", "event": event, "attempt": attempt, "pid": pid, "t": t}


def test_two_runs_at_once_overlap_though_none_started_after_an_end() -> None:
    """['start', 'start', 'end', 'end']: the re-execution check misses it; the overlap check not."""
    lines = [_line("start", 10, 1.0), _line("start", 20, 2.0, "a2"), _line("end", 10, 3.0),
             _line("end", 20, 4.0, "a2")]
    assert not started_again_after_end([line["event"] for line in lines])
    assert overlapping_runs(lines)


def test_a_run_after_the_others_end_does_not_overlap() -> None:
    """['start', 'end', 'start', 'end']: run again (the other check counts it), never at once."""
    lines = [_line("start", 10, 1.0), _line("end", 10, 2.0), _line("start", 20, 3.0, "a2"),
             _line("end", 20, 4.0, "a2")]
    assert started_again_after_end([line["event"] for line in lines])
    assert not overlapping_runs(lines)


def test_a_killed_run_and_a_single_run_do_not_overlap() -> None:
    """A run that never ended (its instance killed) has no end to overlap another with."""
    assert not overlapping_runs([_line("start", 10, 1.0), _line("start", 20, 2.0, "a2"),
                                 _line("end", 20, 3.0, "a2")])
    assert not overlapping_runs([_line("start", 10, 1.0), _line("end", 10, 2.0)])
