"""A local runner whose attempt folder was deleted ends once its job does.

The runner retries writing the exit code while the disk is full (tests/crash/test_disk_full.py);
it retried every failure, so a runner whose folder was removed (a data dir wiped, a test's
temporary folder cleaned) slept and retried for good after its job ended: leftover runners were
found still running 40 minutes after their jobs.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from adapters.local import LocalAdapter
from broker.model import SiteId
from tests.brokerproc import JOB_PYTHON
from tests.crash.test_local_runner import request
from tests.processes import Held


def test_a_runner_whose_folder_is_gone_exits_with_its_job(tmp_path: Path) -> None:
    adapter = LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "cpus": 2})
    token = adapter.submit(request("tok-1", [JOB_PYTHON, "-c", "import time; time.sleep(2)"]))
    folder = tmp_path / "data" / "local" / token
    runner = Held(int(json.loads((folder / "meta.json").read_text())["pid"]))
    try:
        deadline = time.monotonic() + 30
        while not (folder / "exit_code.tmp").exists():  # the runner is up and has reserved its file
            assert time.monotonic() < deadline, "the runner never started"
            time.sleep(0.05)
        shutil.rmtree(folder)
        # The job ends after 2 s; the runner must follow it (a generous bound for a loaded box).
        assert runner.wait_gone(120), "the runner kept running after its job, its folder gone"
    finally:
        runner.kill()
