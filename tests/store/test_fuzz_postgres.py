"""The fuzz run of `bench/fuzz.py` with the broker's state in PostgreSQL (issue 10, obs. 3).

PostgreSQL refuses NUL characters in text that SQLite takes: an id or filter with one must
answer NOT_FOUND or INVALID_ARGUMENT, never INTERNAL.
"""

from __future__ import annotations

from bench.fuzz import run


def test_hostile_requests_on_postgres_get_no_internal_or_unknown(pg_dsn: str) -> None:
    result = run(1500, seed=5, dsn=pg_dsn)
    assert (result["internal"], result["unknown"], result["crashes"]) == (0, 0, 0), result["failures"]
    assert result["tracebacks"] == 0 and result["intact"] == "40/40"
