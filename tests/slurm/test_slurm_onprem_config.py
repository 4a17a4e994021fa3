"""The Slurm adapter as the broker builds it: policy partitions, gres mapping, waits. No cluster."""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import Capability, ConfigError, NotFoundError, supports
from adapters.slurm import (
    PartitionConfig,
    PartitionState,
    PendingWork,
    RunningWork,
    SlurmAdapter,
    parse_partitions,
    partition_wait_s,
)
from adapters.slurm._script import exit_code_file, output_file, started_file
from broker.model import AttemptState, SiteId

SITE = SiteId("shangzhuang-onprem")
ME = pwd.getpwuid(os.geteuid()).pw_name
POLICY_PARTITIONS: list[dict[str, Any]] = [  # what dispatch.offers.site_configs() passes
    {"name": "ascend", "accelerator": "Ascend910B", "count_per_node": 4, "nodes": 1, "price_hour": 6.0,
     "cpus_per_node": 16.0, "memory_gb_per_node": 0.0, "slot_counts": None, "expected_wait": None},
    {"name": "a800", "accelerator": "A800", "count_per_node": 4, "nodes": 1, "price_hour": 14.0,
     "cpus_per_node": 16.0, "memory_gb_per_node": 0.0, "slot_counts": None, "expected_wait": None},
    {"name": "cpu", "accelerator": None, "count_per_node": 0, "nodes": 2, "price_hour": 0.5,
     "cpus_per_node": 16.0, "memory_gb_per_node": 0.0, "slot_counts": None, "expected_wait": None},
]


def test_policy_list_form_and_gres_types() -> None:
    parts = parse_partitions(SITE, {"partitions": POLICY_PARTITIONS, "gres_types": {"A800": "a800-sxm"}})
    assert list(parts) == ["ascend", "a800", "cpu"]
    assert parts["ascend"] == PartitionConfig("ascend", "Ascend910B", None, 6.0)
    assert parts["a800"].gres_type == "a800-sxm" and parts["a800"].price_per_accelerator_hour == 14.0
    assert parts["cpu"].accelerator is None and parts["cpu"].gres_type is None
    own = [{"name": "a800", "accelerator": "A800", "gres_type": "x"}]
    by_name = parse_partitions(SITE, {"partitions": own, "gres_types": {"a800": "y"}})
    assert by_name["a800"].gres_type == "x"  # the partition's own setting wins
    with pytest.raises(ConfigError):
        parse_partitions(SITE, {"partitions": [{"accelerator": "A800"}]})
    with pytest.raises(ConfigError):
        parse_partitions(SITE, {"partitions": []})


def _nodes() -> list[dict[str, Any]]:
    return [
        {"name": "n1", "state": "MIXED", "partitions": ["ascend", "cpu"], "cpus": 16, "alloc_cpus": 2,
         "real_memory": 8192, "gres": "gpu:ascend910b:4", "gres_used": "gpu:ascend910b:2(IDX:0-1)"},
        {"name": "n2", "state": "IDLE", "partitions": ["a800", "cpu"], "cpus": 16, "alloc_cpus": 0,
         "real_memory": 8192, "gres": "gpu:a800:4", "gres_used": "gpu:a800:0(IDX:N/A)"},
    ]


def _fake(now: float, jobs: list[dict[str, Any]], tmp: Path) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/openapi/v3":
            return httpx.Response(200, json={"paths": {"/slurm/v0.0.38/ping": {}}})
        if path.endswith("/nodes"):
            return httpx.Response(200, json={"nodes": _nodes(), "errors": []})
        if path.endswith("/jobs"):
            return httpx.Response(200, json={"jobs": jobs, "errors": []})
        if path.endswith("/job/41"):
            return httpx.Response(500, json={"errors": [{"error_number": 2017, "error": "Invalid job id"}]})
        return httpx.Response(404, text="no")
    return httpx.Client(transport=httpx.MockTransport(handle))


def test_built_from_the_policy_queues_jobs_and_reports_waits(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    running = {"job_id": 40, "job_state": "RUNNING", "partition": "ascend", "tres_per_node": "gres:gpu:2",
               "end_time": int(now.timestamp()) + 600}
    adapter = SlurmAdapter(SITE, {"url": "http://slurm.test", "token": "t", "user": "alice",
                                  "partitions": POLICY_PARTITIONS, "region": "", "zones": [], "provider": "",
                                  "output_dir": str(tmp_path)},
                           client=_fake(now.timestamp(), [running], tmp_path))
    assert supports(adapter, Capability.QUEUES_JOBS)
    snap = {p.name: p for p in adapter.capacity(now).partitions}
    assert set(snap) == {"ascend", "a800", "cpu"}
    assert (snap["ascend"].total, snap["ascend"].free) == (4, 2)
    assert snap["ascend"].expected_wait_s == pytest.approx(600, abs=2)  # a 3rd GPU frees at the limit
    assert (snap["a800"].free, snap["a800"].expected_wait_s) == (4, 0.0)
    assert (snap["cpu"].total, snap["cpu"].free) == (32, 30)
    assert adapter.expected_wait_s("ascend", 2, now) == 0.0
    assert adapter.expected_wait_s("ascend", 4, now) == pytest.approx(600, abs=2)
    assert adapter.expected_wait_s("ascend", 5, now) is None


def test_partition_wait_is_for_the_smallest_job_that_does_not_fit() -> None:
    part = PartitionConfig("p", "A800", None, 1.0)
    state = PartitionState(part, 4, 1, 4, 16, 64, (RunningWork(1, 60), RunningWork(2, 3600)), ())
    assert partition_wait_s(state) == 60  # 2 GPUs: the first release
    queued = PartitionState(part, 4, 0, 4, 16, 64, (RunningWork(4, 600),), (PendingWork(4, 1200),))
    assert partition_wait_s(queued) == pytest.approx((4 * 600 + 4 * 1200) / 4)
    drained = PartitionState(part, 0, 0, 0, 16, 64, (), ())  # no usable node: never, not 0
    assert partition_wait_s(drained) is None


def test_a_purged_job_is_reconciled_from_its_recorded_exit_code(tmp_path: Path) -> None:
    # (the site's user is this test's: the files it writes are then the job's user's own)
    adapter = SlurmAdapter(SITE, {"url": "http://slurm.test", "token": "t", "user": ME,
                                  "partitions": POLICY_PARTITIONS, "output_dir": str(tmp_path)},
                           client=_fake(0, [], tmp_path))
    with pytest.raises(NotFoundError):
        adapter.status("41")  # no marker: really unknown
    (tmp_path / "tok41.jobid").write_text("41")
    with pytest.raises(NotFoundError):
        adapter.status("41")  # purged before it ever started (no output file): it never ran
    output_file(adapter.settings, "tok41", "41").write_text("the end\n")
    # The script did not get to record a code (cancelled at Slurm, killed, node lost) while the
    # broker was down: it ran, so it is FAILED, never lost and run again (held-out review: a
    # job whose shell was killed after its command finished ran twice).
    unrecorded = adapter.status("41")
    assert unrecorded.state is AttemptState.FAILED and unrecorded.exit_code is None
    assert "left no exit code" in unrecorded.message and unrecorded.log_tail == "the end\n"
    assert unrecorded.stopped_at is not None  # settled to its output's last write, not to now
    exit_code_file(adapter.settings, "tok41", "41").write_text("3\n")
    status = adapter.status("41")
    assert status.state is AttemptState.FAILED and status.exit_code == 3 and status.log_tail == "the end\n"
    if os.geteuid() == 0:  # files another user made (held-out review, issue 10): not believed
        os.chown(exit_code_file(adapter.settings, "tok41", "41"), 65534, 65534)
        status = adapter.status("41")  # its own output, no code of its own: it ran and left none
        assert status.state is AttemptState.FAILED and status.exit_code is None, status
        said = f"{exit_code_file(adapter.settings, 'tok41', '41')} (uid 65534"
        assert said in status.message, status.message
        os.chown(output_file(adapter.settings, "tok41", "41"), 65534, 65534)
        status = adapter.status("41")
        said = f"{output_file(adapter.settings, 'tok41', '41')} (uid 65534"
        assert status.state is AttemptState.LOST and said in status.message, status
    # An attempt an older broker ran (its marker without a uid: the site's user's) named its files
    # by the token alone; they still say how it ended when that user wrote them.
    (tmp_path / "tok41.jobid").unlink()
    (tmp_path / "tok42.jobid").write_text("41")
    (tmp_path / "tok42.out").write_text("old\n")
    (tmp_path / "tok42.rc").write_text("0\n")
    status = adapter.status("41")
    assert status.state is AttemptState.SUCCEEDED and status.log_tail == "old\n", status


def test_a_job_slurm_ran_and_forgot_before_its_id_was_recorded_is_found_by_its_own_word(
    tmp_path: Path,
) -> None:
    """Held-out review (issue 11): the broker was killed between Slurm taking the job and the
    marker's write, and stayed down longer than MinJobAge; the marker was empty and slurmctld
    listed nothing with the token, so the restarted broker submitted the token again: the job ran
    twice, the second run overwriting the first's output. The batch script now writes its job id
    to `<token>.<key>.started` as it starts."""
    from adapters.slurm._script import batch_script
    from tests.adapter_contract import default_request

    listed = [{"job_id": 52, "job_state": "RUNNING", "partition": "cpu", "comment": "szb:token=tok-other"}]
    adapter = SlurmAdapter(SITE, {"url": "http://slurm.test", "token": "t", "user": ME,
                                  "partitions": POLICY_PARTITIONS, "output_dir": str(tmp_path)},
                           client=_fake(0, listed, tmp_path))
    offer = next(o for o in adapter.offers(datetime.now(UTC)) if o.accelerator is None)
    request = default_request(offer, "tok41")
    started = started_file(adapter.settings, "tok41")
    assert f'echo "$SLURM_JOB_ID" > {started}."$SLURM_JOB_ID".tmp' in batch_script(request, adapter.settings)
    (tmp_path / "tok41.jobid").write_text("")  # the submit was attempted; its reply never recorded
    started_file(adapter.settings, "tok41").write_text("41\n")
    output_file(adapter.settings, "tok41", "41").write_text("the end\n")
    exit_code_file(adapter.settings, "tok41", "41").write_text("0\n")
    assert adapter.submit(request) == "41"  # the fake refuses job/submit: it was not sent again
    # and a later restart still knows it, and the uid the job ran as (whose files alone count)
    assert (tmp_path / "tok41.jobid").read_text() == f"41 {os.geteuid()}"
    fresh = SlurmAdapter(SITE, {"url": "http://slurm.test", "token": "t", "user": ME,
                                "partitions": POLICY_PARTITIONS, "output_dir": str(tmp_path)},
                         client=_fake(0, listed, tmp_path))
    done = fresh.status("41")
    assert done.state is AttemptState.SUCCEEDED and done.log_tail == "the end\n"
    # A job writes that file: an id slurmctld lists under another token is not taken from it,
    # nor one above every id it lists (the next job would get it: another tenant's, which the
    # broker would then follow and cancel), nor one the job's own output does not vouch for
    # (review of this change: another tenant's job can write this folder).
    (tmp_path / "tok43.jobid").write_text("")
    for planted in ("52", "53"):
        started_file(adapter.settings, "tok43").write_text(planted)
        output_file(adapter.settings, "tok43", planted).write_text("")
        assert fresh.ledger.find("tok43") is None, planted
    started_file(adapter.settings, "tok43").write_text("40")
    assert fresh.ledger.find("tok43") is None  # no output of job 40: it never ran as that token
    output_file(adapter.settings, "tok43", "40").write_text("")
    if os.geteuid() == 0:  # written by another user than the job's output
        os.chown(started_file(adapter.settings, "tok43"), 65534, 65534)
        assert fresh.ledger.find("tok43") is None
        os.chown(started_file(adapter.settings, "tok43"), 0, 0)
    assert fresh.ledger.find("tok43") == "40"  # a past id, vouched for by its output: the job's own
