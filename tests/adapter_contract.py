"""`AdapterContract`: the promises of `adapters.base.Adapter`, checked against every backend.

Each adapter's tests subclass it once (as `TestXxxContract`) against a real far end (the
local host, the real Slurm cluster, moto's server, the ECS double, libcloud's drivers) and
provide three fixtures:

* `adapter`: a fresh adapter for the test;
* `refused`: a call the backend refuses, and the `AdapterError` subclass it must raise;
* `launch_request` (optional): how a launch for an offer looks there (default: one
  accelerator of the offer, or 1 CPU).

and the class attributes `unknown_id` (a well-formed backend id nothing carries) and
`queues_jobs` (whether the backend keeps a queue of its own). A fifth cloud adds one such
subclass next to its own tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from adapters.base import Adapter, AdapterError, Capability, NotFoundError, supports
from broker.model import (
    AcceleratorRequest,
    AttemptId,
    AttemptState,
    JobId,
    JobSpec,
    LaunchRequest,
    Offer,
    Resources,
)

NOW = datetime(2026, 5, 1, tzinfo=UTC)

MakeRequest = Callable[[Offer, str], LaunchRequest]


@dataclass(frozen=True)
class Refusal:
    """A call the backend refuses, and the class of error that refusal must be."""

    call: Callable[[], object]
    kind: type[AdapterError]


def eventually(check: Callable[[], str], timeout_s: float) -> None:
    """Poll `check` (which returns what is still wrong, or "") until it passes or time runs out."""
    deadline = time.monotonic() + timeout_s
    while (wrong := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not wrong, wrong


def default_request(offer: Offer, token: str) -> LaunchRequest:
    """A short job on one accelerator of the offer (or one CPU), named by its token."""
    accelerators = AcceleratorRequest()
    if offer.accelerator:
        accelerators = AcceleratorRequest(count=1, any_of=(offer.accelerator,))
    spec = JobSpec(
        name="contract",
        command=("sleep", "30"),
        runtime_estimate=timedelta(minutes=5),
        resources=Resources(cpus=1, memory_gb=0.25, accelerators=accelerators),
    )
    suffix = token[-12:]
    return LaunchRequest(
        job_id=JobId(f"job-{suffix}"),
        attempt_id=AttemptId(f"att-{suffix}"),
        token=token,
        spec=spec,
        offer=offer,
        agent_endpoint="127.0.0.1:7070",
        agent_token="agent-secret",
    )


class AdapterContract:
    """What every adapter promises (see `adapters.base.Adapter`); subclass to run it."""

    unknown_id: ClassVar[str]
    """A backend id in this backend's own format that names nothing there."""
    queues_jobs: ClassVar[bool] = False
    """Whether jobs may be sent to this backend to wait in its own queue."""
    settle_s: ClassVar[float] = 30.0
    """How long reads may lag a write (the contract is eventually consistent)."""

    @pytest.fixture
    def launch_request(self) -> MakeRequest:
        return default_request

    @pytest.fixture
    def launched(self, adapter: Adapter) -> Iterator[list[str]]:
        """Backend ids a test started; cancelled at teardown so nothing outlives the test."""
        ids: list[str] = []
        yield ids
        # Each with its own token: a backend that marks jobs with theirs stops no other's.
        try:
            tokens = {o.backend_id: o.token for o in adapter.list_owned()} if ids else {}
        except AdapterError:
            tokens = {}
        for backend_id in ids:
            try:
                adapter.cancel(backend_id, tokens.get(backend_id) or "contract-teardown")
            except AdapterError:
                pass

    def pick_offer(self, adapter: Adapter) -> Offer:
        """The offer a launch uses: one with room now, cheapest first (ties by key)."""
        offers = [o for o in adapter.offers(NOW) if o.free is None or o.free > 0]
        assert offers, f"{adapter.site}: no offer with free capacity to launch on"
        return min(offers, key=lambda o: (o.price_per_hour, o.key))

    # Description ---------------------------------------------------------------------------

    def test_is_an_adapter(self, adapter: Adapter) -> None:
        assert isinstance(adapter, Adapter)
        assert isinstance(adapter.site, str) and adapter.site

    def test_missing_capabilities_come_with_reasons(self, adapter: Adapter) -> None:
        missing = adapter.unsupported()
        assert all(isinstance(c, Capability) for c in missing), missing
        assert all(isinstance(why, str) and why.strip() for why in missing.values()), missing

    def test_queues_jobs_is_declared(self, adapter: Adapter) -> None:
        assert supports(adapter, Capability.QUEUES_JOBS) is self.queues_jobs

    def test_offers_are_well_formed(self, adapter: Adapter) -> None:
        offers = adapter.offers(NOW)
        assert offers, f"{adapter.site} offers nothing"
        keys = [o.key for o in offers]
        assert len(set(keys)) == len(keys), f"offer keys repeat: {sorted(keys)}"
        for o in offers:
            assert o.site == adapter.site, o
            assert o.instance_type, o
            assert (o.accelerator is None) == (o.count == 0), f"accelerator and count disagree: {o}"
            assert len(o.currency) == 3 and o.currency.isupper(), o
            assert o.free is None or o.free >= 0, o
            assert o.expected_wait_s >= 0 and o.cpus >= 0 and o.memory_gb >= 0, o
            assert o.price_read_at is None or o.price_read_at == NOW, o
            if o.spot:
                assert Capability.SPOT not in adapter.unsupported(), f"spot offer, spot unsupported: {o}"

    def test_capacity_is_consistent(self, adapter: Adapter) -> None:
        snap = adapter.capacity(NOW)
        if Capability.CAPACITY in adapter.unsupported():
            return  # optional: such a backend may answer None
        assert snap is not None and snap.site == adapter.site
        assert snap.partitions, "a site with the capacity capability reports no partition"
        for part in snap.partitions:
            assert 0 <= part.free <= part.total, part

    # Lifecycle -----------------------------------------------------------------------------

    def test_launch_is_idempotent_by_token(
        self, adapter: Adapter, launch_request: MakeRequest, launched: list[str]
    ) -> None:
        token = f"tok-{uuid.uuid4().hex}"
        request = launch_request(self.pick_offer(adapter), token)
        first = adapter.submit(request)
        launched.append(first)
        assert first
        again = adapter.submit(request)
        assert again == first, "a retry with the same token started a second instance"
        mine = [o for o in adapter.list_owned() if o.token == token]
        assert [o.backend_id for o in mine] == [first], mine
        assert mine[0].job_id == request.job_id and mine[0].attempt_id == request.attempt_id
        assert adapter.status(first).state in (AttemptState.PENDING, AttemptState.RUNNING)

    def test_another_token_is_another_instance(
        self, adapter: Adapter, launch_request: MakeRequest, launched: list[str]
    ) -> None:
        offer = self.pick_offer(adapter)
        token = f"tok-{uuid.uuid4().hex}"
        first = adapter.submit(launch_request(offer, token))
        launched.append(first)
        adapter.cancel(first, token)
        second = adapter.submit(launch_request(offer, f"tok-{uuid.uuid4().hex}"))
        launched.append(second)
        assert second != first

    def test_status_of_an_unknown_id_is_not_found(self, adapter: Adapter) -> None:
        with pytest.raises(NotFoundError) as err:
            adapter.status(self.unknown_id)
        assert err.value.site == adapter.site

    def test_cancel_of_an_unknown_id_is_a_no_op(self, adapter: Adapter) -> None:
        adapter.cancel(self.unknown_id, "tok-unknown")
        assert all(o.backend_id != self.unknown_id for o in adapter.list_owned())

    def test_cancel_is_idempotent_and_ends_the_attempt(
        self, adapter: Adapter, launch_request: MakeRequest, launched: list[str]
    ) -> None:
        token = f"tok-{uuid.uuid4().hex}"
        backend_id = adapter.submit(launch_request(self.pick_offer(adapter), token))
        launched.append(backend_id)
        adapter.cancel(backend_id, token)
        adapter.cancel(backend_id, token)

        def ended() -> str:
            try:
                state = adapter.status(backend_id).state
            except NotFoundError:
                state = None
            if state is not None and not state.terminal:
                return f"status still {state} after cancel"
            live = [o for o in adapter.list_owned() if o.backend_id == backend_id and not o.state.terminal]
            return f"cancelled attempt still listed as live: {live}" if live else ""

        eventually(ended, self.settle_s)

    # Errors --------------------------------------------------------------------------------

    def test_refusals_are_classified(self, adapter: Adapter, refused: Refusal) -> None:
        assert refused.kind is not AdapterError, "name the specific kind the refusal must be"
        with pytest.raises(AdapterError) as err:
            refused.call()
        assert type(err.value) is refused.kind, f"{type(err.value).__name__}: {err.value}"
        assert err.value.site == adapter.site and err.value.code, err.value
