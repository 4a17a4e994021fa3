"""A second Slurm job of one attempt neither takes nor changes the first one's files or result.

Slurm has no idempotency token: a deposed leader's late submit starts a second job with the
attempt's token (tests/ha/test_slurm_takeover.py), which runs until the reconciler cancels it.
With the job's files named by the token alone, whichever of the two opened the output file second
stopped at once (its noclobber open failed, exit 2): when that was the job the attempt follows,
the attempt ended FAILED with the duplicate's leftover as its result.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from adapters.slurm import SlurmAdapter
from adapters.slurm._queued import submitted_job_id
from adapters.slurm._script import output_file, submit_body
from broker.model import AttemptState, LaunchRequest
from tests.slurm.conftest import PARTITIONS, SITE, Tracker, launch

pytestmark = pytest.mark.slurm

TERMINAL = {s for s in AttemptState if s.terminal}
SAYS_ITS_ID = ("/bin/sh", "-c", 'echo "ran as $SLURM_JOB_ID"; sleep 4; exit 3')


def late_submit(slurm: Tracker, request: LaunchRequest) -> str:
    """The attempt's job sent again, past the ledger, as a paused leader's sbatch that arrives late."""
    adapter = slurm.adapter
    part = adapter.partitions[request.offer.instance_type]
    body = submit_body(request, part, adapter.settings, api_version=adapter.api_version,
                       gres_type=adapter.reads.gres_type_for_submit(part))
    backend_id = submitted_job_id(adapter.rest, adapter.rest.request("POST", "job/submit", payload=body))
    slurm.submitted.append(backend_id)
    slurm.tokens[backend_id] = request.token
    return backend_id


def until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.25)


def running_with_output(slurm: Tracker, request: LaunchRequest, backend_id: str) -> None:
    """The job runs and its script has opened its own output file."""
    out = output_file(slurm.adapter.settings, request.token, backend_id)
    until(f"job {backend_id} runs with its output",
          lambda: slurm.adapter.status(backend_id).state is AttemptState.RUNNING and out.exists())


@pytest.mark.parametrize("second_starts_first", [True, False])
def test_a_second_job_of_the_attempt_leaves_the_followed_jobs_files_and_result_alone(
    slurm: Tracker, second_starts_first: bool
) -> None:
    request = launch(SAYS_ITS_ID)
    if second_starts_first:  # the late submit's job started before the one the attempt follows
        second = late_submit(slurm, request)
        running_with_output(slurm, request, second)
        followed = slurm.submit(request)
        running_with_output(slurm, request, followed)
    else:
        followed = slurm.submit(request)
        running_with_output(slurm, request, followed)
        second = late_submit(slurm, request)
        running_with_output(slurm, request, second)  # (it runs until cancelled, as any duplicate)
    assert second != followed
    slurm.adapter.cancel(second, request.token)  # as the reconciler does
    status = slurm.wait(followed, TERMINAL)
    assert status.state is AttemptState.FAILED and status.exit_code == 3, status
    assert f"ran as {followed}" in status.log_tail and f"ran as {second}" not in status.log_tail, status
    assert slurm.wait(second, TERMINAL).state is AttemptState.CANCELLED
    # Once slurmctld forgets the jobs, the attempt's result still comes from its own job's files.
    other = SlurmAdapter(SITE, {"url": slurm.cluster.url, "token": slurm.cluster.token,
                                "user": slurm.cluster.user, "partitions": PARTITIONS,
                                "output_dir": str(slurm.adapter.output_dir), "broker_id": "szb-someone-else"})
    kept = other.status_of(followed, request.token)
    assert kept.state is AttemptState.FAILED and kept.exit_code == 3, kept
    assert f"ran as {followed}" in kept.log_tail and f"ran as {second}" not in kept.log_tail, kept
    seconds = output_file(slurm.adapter.settings, request.token, second).read_text()
    assert seconds.startswith(f"ran as {second}") and f"ran as {followed}" not in seconds
