"""A cloud job cannot take its bootstrap down with it: the result is kept and reported anyway.

Found by a held-out review of issue 11: a job script with the common `trap 'kill 0' EXIT` killed
the bootstrap (it ran in the bootstrap's process group), and a job that filled the instance's
disk made every report snippet die with ENOSPC before the console line or any report. Either way
the finished job was called lost and run again. The real UserData runs against a stand-in agent
endpoint, in a session of its own as on an instance (a `kill 0` must not reach pytest).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from adapters.bootstrap import render_user_data, result_from_console
from tests.clouds.conftest import launch
from tests.clouds.test_bootstrap import OFFER, agent_endpoint


def _boot(port: int, command: str, workdir: Path) -> tuple[int, str]:
    """Run the UserData of a job running `command`; its exit code and its console output."""
    req = launch(OFFER, "tok").model_copy(update={"agent_endpoint": f"127.0.0.1:{port}"})
    req = req.model_copy(update={"spec": req.spec.model_copy(update={"command": ("sh", "-c", command)})})
    script = render_user_data(req, heartbeat_s=1, report_backoff_max_s=1)
    env = {**os.environ, "SZB_WORKDIR": str(workdir), "SZB_NO_POWEROFF": "1"}
    proc = subprocess.Popen(
        ["sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out.decode("utf-8", "replace")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the job left behind
        except ProcessLookupError:
            pass


def test_a_job_that_kills_its_process_group_leaves_its_bootstrap_alive(tmp_path: Path) -> None:
    server, seen, _ = agent_endpoint(lambda n: 200)
    try:
        rc, console = _boot(server.server_port, "trap 'kill 0' EXIT; sleep 300 & echo trained", tmp_path)
    finally:
        server.shutdown()
    kept = result_from_console(console, "att-1")
    assert kept is not None and "trained" in kept.log_tail, console
    assert rc == kept.exit_code and rc != -signal.SIGTERM, console  # the job's own `kill 0` ended it
    assert any(s.startswith("exit@") for s in seen), seen
    assert (tmp_path / "acked").exists()


def test_a_job_that_fills_the_disk_still_has_its_result_printed_and_reported(small_disk: Path) -> None:
    server, seen, logged = agent_endpoint(lambda n: 200)
    fill = 'echo trained; head -c 50000000 /dev/zero > "$SZB_WORKDIR/../checkpoint.bin" 2>/dev/null; exit 0'
    try:
        rc, console = _boot(server.server_port, fill, small_disk / "instance")
    finally:
        server.shutdown()
    assert rc == 0, console
    kept = result_from_console(console, "att-1")
    assert kept is not None and kept.exit_code == 0 and kept.log_tail == "trained\n", console
    assert [s for s in seen if s.startswith("exit@")] == ["exit@8"], seen  # after the output
    assert bytes(logged) == b"trained\n"
