"""A job over several nodes fits only where that many nodes each have its share free: the
pooled free count of a partition (16 of 32 CPUs, all on one node) said a 2-node gang could start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.burst.inputs import BurstInputs
from broker.model import JobSpec, Offer, Resources

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def offer(free_by_node: tuple[int, ...]) -> Offer:
    return Offer(site="hpc", instance_type="cpu", accelerator=None, count=0, price_per_hour=1.0,
                 free=sum(free_by_node), free_by_node=free_by_node)


def gang(nodes: int, cpus: float) -> JobSpec:
    return JobSpec(name="g", command=("true",), runtime_estimate=timedelta(minutes=5),
                   resources=Resources(cpus=cpus, nodes=nodes))


def fits(o: Offer, spec: JobSpec, claimed: int = 0, shapes: tuple[tuple[int, int], ...] = ()) -> bool:
    claimed += sum(per * n for per, n in shapes)
    inputs = BurstInputs(now=NOW, queued_since=NOW, onprem_adjust={o.partition: (claimed, 0.0)},
                         onprem_claim_shapes={o.partition: shapes})
    return inputs.nodes_fit(o, spec)


def test_free_units_on_one_node_do_not_start_a_two_node_gang() -> None:
    assert not fits(offer((16, 0)), gang(2, 1))
    assert fits(offer((16, 1)), gang(2, 1))
    assert not fits(offer((16, 3)), gang(2, 4))
    assert fits(offer((4, 4, 0)), gang(2, 4))


def test_a_one_node_job_needs_one_node_with_all_its_units() -> None:
    # (Review: 4 free on each of two nodes was read as room for an 8-CPU job; Slurm pended it.)
    assert not fits(offer((4, 4)), gang(1, 8))
    assert fits(offer((16, 0)), gang(1, 8))
    assert not fits(offer((8, 4)), gang(1, 8), claimed=2)  # (in-flight claims off the fullest)


def test_backends_that_do_not_say_per_node_are_left_to_the_pooled_count() -> None:
    assert fits(offer(()), gang(2, 4))
    assert fits(offer(()), gang(1, 8))


def test_units_claimed_earlier_in_the_pass_are_taken_from_the_fullest_nodes() -> None:
    # 8 + 8 free; a job of this pass took 6 somewhere: at worst one node has 2 left.
    assert fits(offer((8, 8)), gang(2, 2), claimed=6)
    assert not fits(offer((8, 8)), gang(2, 4), claimed=6)


def test_jobs_started_earlier_in_the_pass_are_placed_as_slurms_best_fit_places_them() -> None:
    """Review of the first version: it took a pass's claims from the fullest nodes, which is
    neither the worst case nor what Slurm does."""
    # Two 3-CPU jobs go onto the two nodes with exactly 3 free: a 3-node gang of 3 no longer fits.
    assert not fits(offer((10, 3, 3)), gang(3, 3), shapes=((3, 1), (3, 1)))
    # A 2-node gang of 4 leaves 4 on each node: a second one fits.
    assert fits(offer((8, 8)), gang(2, 4), shapes=((4, 2),))
    # Launches in flight (no shape known) still come off the fullest nodes.
    assert not fits(offer((8, 8)), gang(2, 4), claimed=6)
