"""Preempted work still stopping keeps its units booked to its owner's job until seen stopped (pure)."""

from __future__ import annotations

from broker.fairshare.stopping import SETTLE_S, STOP_CAP_S, StoppingWork

GRACE_S = 5.0


def booked_units(work: StoppingWork, t: float, job: str = "mine", partition: str = "lab/a800") -> int:
    work.prune(t)
    return sum(s.units for s in work.booked(partition, job))


def test_units_stay_booked_past_the_grace_until_the_victim_is_seen_stopped_then_settle() -> None:
    work = StoppingWork()
    work.add("lab/a800", "a1", 2, "mine", 0.0, GRACE_S)
    # A Slurm victim stops at its cut limit a minute on and more: still booked (was grace + 10 s).
    assert booked_units(work, GRACE_S + 10.0 + 80.0) == 2
    assert booked_units(work, 90.0, job="another") == 0  # the owner's job's, no other's
    assert booked_units(work, 90.0, partition="lab/h800") == 0
    work.stopped("a1", 95.0)
    # A loaded slurmctld read them busy 10 s after the stop, and a second victim was preempted.
    assert booked_units(work, 95.0 + 30.0) == 2
    assert booked_units(work, 95.0 + SETTLE_S - 1.0) == 2  # the job they are booked to has not run
    assert booked_units(work, 95.0 + SETTLE_S) == 0


def test_a_victim_stopped_late_is_still_settled_in_full() -> None:
    work = StoppingWork()
    work.add("lab/a800", "a1", 2, "mine", 0.0, GRACE_S)
    late = GRACE_S + STOP_CAP_S - 5.0  # just inside its cap
    work.stopped("a1", late)
    assert booked_units(work, late + SETTLE_S - 1.0) == 2


def test_the_job_running_or_leaving_releases_what_is_booked_to_it() -> None:
    work = StoppingWork()
    work.add("lab/a800", "a1", 2, "mine", 0.0, GRACE_S)
    work.add("lab/a800", "a2", 1, "mine", 0.0, GRACE_S)
    work.add("lab/a800", "a3", 1, "theirs", 0.0, GRACE_S)
    work.stopped("a1", 20.0)
    assert work.for_jobs() == {"mine", "theirs"}
    version = work.version
    assert work.release("mine")
    assert work.version > version  # a saver stores the release
    assert booked_units(work, 21.0) == 0
    assert booked_units(work, 21.0, job="theirs") == 1
    assert not work.release("mine")  # nothing more to release


def test_a_victim_never_seen_stopped_is_given_up_after_the_cap_and_reported() -> None:
    work = StoppingWork()
    work.add("lab/a800", "a1", 2, "mine", 0.0, GRACE_S)
    work.add("lab/a800", "a2", 1, "mine", 0.0, GRACE_S)
    work.stopped("a2", 3.0)
    assert work.prune(GRACE_S + STOP_CAP_S - 1.0) == []
    overdue = work.prune(GRACE_S + STOP_CAP_S)
    assert [s.attempt_id for s in overdue] == ["a1"]  # a2 stopped: over, not overdue
    assert work.booked("lab/a800", "mine") == []
    work.stopped("a1", GRACE_S + STOP_CAP_S + 1.0)  # a late word changes nothing
    assert work.booked("lab/a800", "mine") == []


def test_units_booked_to_one_job_are_kept_from_every_other() -> None:
    work = StoppingWork()
    work.add("lab/gpu", "a-1", 4, "owner-job", t=100.0, grace_s=20.0)
    units = lambda job, partition="lab/gpu", t=110.0: [  # noqa: E731
        (s.attempt_id, s.units, s.stopped) for s in work.booked_elsewhere(partition, job, t)]
    assert units("borrowed-job") == [("a-1", 4, False)]
    assert units("owner-job") == []  # its own
    assert units("borrowed-job", "other/gpu") == []
    work.stopped("a-1", 130.0)  # seen stopped: booked until the owner's job has them
    assert units("borrowed-job", t=135.0) == [("a-1", 4, True)]
    assert units("borrowed-job", t=130.0 + SETTLE_S) == []
    work.add("lab/gpu", "a-2", 4, "owner-job", t=200.0, grace_s=20.0)
    work.release("owner-job")
    assert units("borrowed-job", t=201.0) == []
