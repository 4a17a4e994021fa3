"""Units reclaimed for an owner's job keep every other job from queueing for them (pure).

On Slurm a job sent to the batch queue while an owner's job waits in the broker for units being
reclaimed for it would start on them first (a lower Slurm job id). `Reclaimer.keep_off` holds
such a RUN in the broker, unless the units free beside the booked ones fit it now.
"""

from __future__ import annotations

from datetime import UTC, datetime

from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision
from broker.fair_reclaim import Reclaimer
from broker.model import Offer, SiteId

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PART = "lab/a800"


def run_on(free: int, units: int, snap: PassSnapshot) -> Decision:
    """A RUN as `decide_in_pass` leaves it: the job's units are claimed in the pass already."""
    offer = Offer(site=SiteId("lab"), instance_type="a800", accelerator="A800", count=units,
                  price_per_hour=14.0, free=free)
    snap.claimed[PART] = snap.claimed.get(PART, 0) + units
    return Decision(Action.RUN, offer, ("lab expects a wait of 9 min; sent to its queue",))


def reclaimer_with_booking(units: int, *, stopped: bool = False) -> Reclaimer:
    r = Reclaimer()
    r._stopping.add(PART, "victim-attempt", units, "owner-job", NOW.timestamp() - 5, grace_s=20.0)
    if stopped:
        r._stopping.stopped("victim-attempt", NOW.timestamp())
    return r


def test_a_job_bound_for_the_queue_waits_while_units_are_booked_to_another_job() -> None:
    snap = PassSnapshot(now=NOW, offers=[])
    kept = reclaimer_with_booking(4).keep_off(run_on(0, 4, snap), "borrowed-job", 4, snap)
    assert kept is not None and kept.action == Action.WAIT
    assert kept.reasons == ("4 unit(s) on lab/a800 are being reclaimed for another job; "
                            "it waits until that job has them",)  # not "sent to its queue"
    assert snap.claimed[PART] == 0  # its claim is given back


def test_the_job_they_are_booked_to_and_a_job_that_fits_beside_them_go_on() -> None:
    snap = PassSnapshot(now=NOW, offers=[])
    r = reclaimer_with_booking(2)
    assert r.keep_off(run_on(0, 4, snap), "owner-job", 4, snap) is None
    snap = PassSnapshot(now=NOW, offers=[])
    assert r.keep_off(run_on(2, 2, snap), "small-job", 2, snap) is None  # 2 free beside the 2 booked


def test_units_seen_stopped_read_free_but_are_still_not_another_jobs() -> None:
    snap = PassSnapshot(now=NOW, offers=[])
    kept = reclaimer_with_booking(4, stopped=True).keep_off(run_on(4, 4, snap), "borrowed-job", 4, snap)
    assert kept is not None and kept.action == Action.WAIT


def test_nothing_is_held_once_the_booking_is_over() -> None:
    snap = PassSnapshot(now=NOW.replace(minute=30), offers=[])
    assert reclaimer_with_booking(4).keep_off(run_on(0, 4, snap), "borrowed-job", 4, snap) is None


def test_units_booked_to_a_job_this_pass_runs_are_not_counted_twice() -> None:
    """Held-out review: two owner jobs each reclaimed a unit; once both victims stopped, the pass
    ran the first on its unit (claimed) and still held that unit as booked to it, so the second
    owner job was told its unit was "being reclaimed for another job" and waited a scan or more."""
    r = Reclaimer()
    r._stopping.add(PART, "victim-1", 1, "owner-1", NOW.timestamp() - 5, grace_s=20.0)
    r._stopping.add(PART, "victim-2", 1, "owner-2", NOW.timestamp() - 5, grace_s=20.0)
    for victim in ("victim-1", "victim-2"):
        r._stopping.stopped(victim, NOW.timestamp())
    snap = PassSnapshot(now=NOW, offers=[])
    assert r.keep_off(run_on(2, 1, snap), "owner-1", 1, snap) is None
    snap.running_jobs.add("owner-1")  # as `FairQueue.adjust` notes it
    assert r.keep_off(run_on(2, 1, snap), "owner-2", 1, snap) is None
    # Before the second owner's job runs, a borrowed job may not take its unit.
    snap = PassSnapshot(now=NOW, offers=[])
    run_on(2, 1, snap)
    snap.running_jobs.add("owner-1")
    kept = r.keep_off(run_on(2, 1, snap), "borrowed-job", 1, snap)
    assert kept is not None and kept.action == Action.WAIT


def test_a_job_this_pass_runs_still_keeps_a_queued_job_off_the_rest_of_its_units() -> None:
    """On Slurm: a patient job stopped for an urgent one was sent back to the queue in the pass
    that ran the urgent job on one of the four freed units; Slurm started the patient job first
    and the urgent one burst. Its booking no longer counts twice, but the units it left are
    still not enough for the patient job, which waits."""
    r = Reclaimer()
    r._stopping.add(PART, "patient-attempt", 4, "urgent", NOW.timestamp() - 90, grace_s=5.0)
    r._stopping.stopped("patient-attempt", NOW.timestamp())
    snap = PassSnapshot(now=NOW, offers=[])
    run_on(4, 1, snap)  # the urgent job, run on its booked units, claims one
    snap.running_jobs.add("urgent")
    kept = r.keep_off(run_on(4, 4, snap), "patient", 4, snap)
    assert kept is not None and kept.action == Action.WAIT


def test_units_of_victims_their_backend_no_longer_runs_are_not_another_jobs() -> None:
    """CI, two owners on the local executor: the victims' processes ended and the capacity read
    their units free a status poll before the broker saw them stopped; the other owner's job took
    them, and the owner they were booked to preempted two more borrowed jobs."""
    snap = PassSnapshot(now=NOW, offers=[], ended=frozenset({"victim-attempt"}))
    kept = reclaimer_with_booking(2).keep_off(run_on(2, 2, snap), "other-owner-job", 2, snap)
    assert kept is not None and kept.action == Action.WAIT
    # Still running as far as the backend says: its units are not in `free`, nothing more is held.
    snap = PassSnapshot(now=NOW, offers=[])
    assert reclaimer_with_booking(2).keep_off(run_on(2, 2, snap), "other-owner-job", 2, snap) is None
