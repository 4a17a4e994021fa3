"""A job file's wrongly typed list item is one error at the item, not also "at least 1 item(s)"
for a list that has one (pydantic counts the list without its bad items; held-out review)."""

from __future__ import annotations

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
