"""Which of the run's two Slurm clusters a test file uses, and so which worker group it joins.

`make test` starts two independent clusters (scripts/test-env.sh gives each its own folder and
ports) so that two Slurm files run at once: a file's tests own their cluster's GPUs, so the files
of one cluster still run one after the other, on one worker. The scheduler (tests/conftest.py)
and the `slurm_cluster` fixture (tests/slurm/conftest.py) both ask `slurm_scope`, so a file's
tests always run beside the cluster they talk to.
"""

from __future__ import annotations

import os

SECOND_CLUSTER_ENV = "SZB_SLURM_B_ENV"
"""The file of `export` lines (`scripts/slurm-cluster.sh env`) of the second cluster, when there is one."""

FIRST, SECOND = "tests/slurm", "tests/slurm#b"

ON_SECOND = frozenset({
    "tests/ha/test_slurm_takeover.py",
    "tests/slurm/test_job_path_slurm.py",
    "tests/slurm/test_preempt_patient_slurm.py",
    "tests/slurm/test_reclaim_delayed_slurm.py",
    "tests/slurm/test_reclaim_grace_slurm.py",
    "tests/slurm/test_reclaim_queued_slurm.py",
    "tests/slurm/test_reclaim_restart_slurm.py",
    "tests/slurm/test_unavailable_nodes_slurm.py",
})
"""Files on the second cluster, picked so that both clusters' files take about as long: 1038 s
and 1050 s of the 2088 s the Slurm files took one after the other (`--durations=0`, 2026-12-07).
A new file goes to the first."""


def two_clusters() -> bool:
    """This run was given a second cluster (`make test` starts one)."""
    return bool(os.environ.get(SECOND_CLUSTER_ENV))


def slurm_scope(path: str) -> str | None:
    """The Slurm group of the test file at `path` (relative to the checkout), None off Slurm."""
    on_slurm = path.startswith("tests/slurm/") or path.rsplit("/", 1)[-1].startswith("test_slurm_")
    if not on_slurm:  # (tests/ha/test_slurm_*.py use the cluster too)
        return None
    return SECOND if path in ON_SECOND and two_clusters() else FIRST
