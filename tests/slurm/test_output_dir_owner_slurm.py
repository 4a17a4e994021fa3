"""An `output_dir` another user could empty is refused before any job is sent (real Slurm).

The default `output_dir` is `$TMPDIR/szb-slurm-output`: any local user may make that folder first.
Its owner can then remove or rename any job's files there (the exit code, the output, the file
key) although the names are secret: a finished job read as lost and run again. `job_root` had its
owner checked; `output_dir` had not (held-out review of issues 10 and 13).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.base import ConfigError
from tests.slurm.conftest import Tracker, launch

pytestmark = pytest.mark.slurm


@pytest.mark.parametrize(("uid", "mode"), [(4242, 0o3733), (0, 0o777)])
def test_an_output_dir_another_user_could_empty_is_refused_before_any_submit(
    slurm: Tracker, tmp_path: Path, uid: int, mode: int
) -> None:
    made_first = tmp_path / "made-first"  # (by user `uid`, or open to all without the sticky bit)
    made_first.mkdir()
    os.chown(made_first, uid, uid)
    made_first.chmod(mode)
    adapter = slurm.make(output_dir=str(made_first))
    before = {o.backend_id for o in adapter.list_owned()}
    with pytest.raises(ConfigError) as refused:
        slurm.submit(launch(("/bin/true",)), adapter)
    assert refused.value.code == "OutputDir"
    assert str(made_first) in refused.value.message and "name an output_dir of the broker's own" in str(
        refused.value.message
    )
    assert {o.backend_id for o in adapter.list_owned()} == before  # nothing was sent to Slurm


def test_an_output_dir_of_the_brokers_own_shared_sticky_takes_jobs(slurm: Tracker, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o3733)  # the broker's own, every job user may write, only an entry's owner rename
    adapter = slurm.make(output_dir=str(shared))
    backend_id = slurm.submit(launch(("/bin/true",)), adapter)
    assert backend_id
