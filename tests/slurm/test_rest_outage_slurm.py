"""A slurmrestd outage of most of a minute in the middle of a run, through the broker.

The broker cannot see Slurm while slurmrestd is down: a job that ends meanwhile must be neither
lost nor run again, and a cancel asked meanwhile (of a running job, of one pending at Slurm) must
reach Slurm once slurmrestd is back.
"""

from __future__ import annotations

import os
import time

import pytest

from broker.api import job_pb2
from broker.model import AttemptState
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_broker_on_slurm import TERMINAL, OnPrem, _kill_slurmrestd, onprem, spec, world

pytestmark = pytest.mark.slurm
__all__ = ["onprem", "world"]  # the module's fixtures, shared with test_broker_on_slurm

OUTAGE_S = 40


def test_a_long_slurmrestd_outage_loses_nothing_reruns_nothing_and_cancels_late(
    world: OnPrem, slurm_cluster: SlurmCluster
) -> None:
    if slurm_cluster.rest_pidfile is None or os.geteuid() != 0:
        pytest.skip("needs the cluster's pid files and root to kill and restart slurmrestd")
    # `pends` asks the whole a800 node, so it waits at Slurm behind `runs` whatever other tests'
    # jobs come and go there (a 2-GPU one backfilled and ran in CI); `ends` runs on the other node.
    runs = world.submit(spec("runs-on", "echo start; sleep 600", gpus=3, runtime_s=900))
    world.wait(runs, {job_pb2.JOB_STATE_RUNNING})
    pends = world.submit(spec("pends", "echo never", gpus=4, max_wait_s=3600))
    world.wait_at_slurm(pends, {AttemptState.PENDING}, timeout=60)
    ends = world.submit(spec("ends-in-outage", "echo begin; sleep 12; echo end of run", gpus=1,
                             accelerator="Ascend910B"))
    world.wait(ends, {job_pb2.JOB_STATE_RUNNING})
    _kill_slurmrestd(slurm_cluster)
    try:
        world.cancel(runs)
        world.cancel(pends)
        assert world.get(runs).state == job_pb2.JOB_STATE_CANCELLED
        assert world.get(pends).state == job_pb2.JOB_STATE_CANCELLED
        time.sleep(OUTAGE_S)  # `ends` ends while slurmrestd is down
        assert world.get(ends).state == job_pb2.JOB_STATE_RUNNING  # nothing decided blindly
    finally:
        slurm_cluster.restart()
    job = world.wait(ends, TERMINAL, timeout=120)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert job.attempts == 1 and "end of run" in job.log_tail
    kinds = [e.kind for e in world.events(ends, seconds=1.0)]
    assert "lost" not in kinds, kinds
    deadline = time.monotonic() + 120
    while True:  # the cancels asked during the outage reach Slurm once it answers again
        left = [o for o in world.slurm.list_owned() if o.job_id in (runs, pends) and not o.state.terminal]
        if not left:
            break
        assert time.monotonic() < deadline, f"still live at Slurm after the outage: {left}"
        time.sleep(0.5)
    assert len([o for o in world.slurm.list_owned() if o.job_id == ends]) == 1  # run once
