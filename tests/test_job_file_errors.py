"""A job file's wrongly typed list item is one error at the item, not also "at least 1 item(s)"
for a list that has one (pydantic counts the list without its bad items; held-out review)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.jobfile import JobFileError, load_job_file


def test_a_bad_item_is_said_once(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: j\ncommand: [true]\nruntime_estimate: 1h\n")
    with pytest.raises(JobFileError) as err:
        load_job_file(job)
    assert [str(p) for p in err.value.problems] == [f"{job}:2:11: error: command[0]: must be a string"]
    job.write_text("name: j\ncommand: []\nruntime_estimate: 1h\n")  # an empty list still is too short
    with pytest.raises(JobFileError) as err:
        load_job_file(job)
    assert [p.message for p in err.value.problems] == ["command: must have at least 1 item(s)"]


NANOS = "2027-01-01T00:00:00.1234567+08:00"
HEAD = 'name: j\ncommand: ["true"]\nruntime_estimate: 1h\n'


@pytest.mark.parametrize("written", [NANOS, f'"{NANOS}"'])
def test_a_deadline_finer_than_a_microsecond_is_refused_not_rounded(tmp_path: Path, written: str) -> None:
    # (read as .123457 unquoted, .123456 quoted: the README has finer nanos refused, as the wire does)
    job = tmp_path / "job.yaml"
    job.write_text(f"{HEAD}deadline: {written}\n")
    with pytest.raises(JobFileError) as err:
        load_job_file(job)
    assert [str(p) for p in err.value.problems] == [
        f"{job}:4:11: error: deadline: must be a whole number of microseconds "
        "(at most 6 digits after the seconds)"
    ]
    job.write_text(f"{HEAD}deadline: 2027-01-01T00:00:00.1234560Z\n")
    assert load_job_file(job).deadline == datetime(2027, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)  # (exact)


@pytest.mark.parametrize("written", ["1000000d", "100d", "1e30", ".inf"])
def test_a_runtime_estimate_too_long_is_said_with_its_own_limit(tmp_path: Path, written: str) -> None:
    # (`1000000d` said "must be a finite duration of at most 10 years"; `100d`, the real 90d)
    job = tmp_path / "job.yaml"
    job.write_text(f'name: j\ncommand: ["true"]\nruntime_estimate: {written}\n')
    with pytest.raises(JobFileError) as err:
        load_job_file(job)
    said = [str(p) for p in err.value.problems]
    assert said == [f"{job}:3:19: error: runtime_estimate: must be at most 90d"], said
