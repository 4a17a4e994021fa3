"""How `pytest -n N` splits the Slurm files between the run's two clusters (tests/slurm/groups.py)."""

from __future__ import annotations

import pytest

from tests.brokerproc import ROOT
from tests.slurm.groups import FIRST, ON_SECOND, SECOND, SECOND_CLUSTER_ENV, slurm_scope


def test_without_a_second_cluster_every_slurm_file_is_in_one_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECOND_CLUSTER_ENV, raising=False)
    for path in (*ON_SECOND, "tests/slurm/test_slurm_model.py", "tests/ha/test_slurm_cancel_output_ha.py"):
        assert slurm_scope(path) == FIRST, path
    assert slurm_scope("tests/ha/test_election.py") is None


def test_with_a_second_cluster_its_files_form_a_group_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECOND_CLUSTER_ENV, "/nonexistent/client.env")
    assert {slurm_scope(path) for path in ON_SECOND} == {SECOND}
    assert slurm_scope("tests/slurm/test_slurm_model.py") == FIRST
    assert slurm_scope("tests/e2e/test_jobs_api.py") is None


def test_every_file_named_for_the_second_cluster_exists_and_uses_slurm() -> None:
    for path in ON_SECOND:
        assert (ROOT / path).is_file(), path
        assert "slurm_cluster" in (ROOT / path).read_text(encoding="utf-8"), path
