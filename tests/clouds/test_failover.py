from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.base import (
    AdapterError,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    SpotQuotaError,
    TransientError,
    UnsupportedError,
)
from broker.dispatch.failover import (
    AttemptTimeoutError,
    Blocklist,
    BlockScope,
    BreakerState,
    CircuitBreaker,
    CircuitBreakers,
    FailoverPolicy,
    NextStep,
    classify_next_step,
)
from broker.dispatch.retry import RetryPolicy, retry_transient
from broker.model import Offer, SiteId
from broker.placement import PlacementContext
from broker.quota_scope import parse as parse_quota
from tests.test_exception_root import defined_exceptions


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def offer(zone: str = "us-east-1a", itype: str = "p4d.24xlarge", spot: bool = False) -> Offer:
    return Offer(
        site=SiteId("aws-us"),
        instance_type=itype,
        accelerator="A100",
        count=8,
        price_per_hour=30,
        spot=spot,
        region="us-east-1",
        zone=zone,
    )


@pytest.mark.parametrize(
    ("cls", "step"),
    [
        (CapacityError, NextStep.BLOCK_OFFER_TRY_NEXT),
        (QuotaError, NextStep.BLOCK_REGION_TRY_NEXT),
        (SpotQuotaError, NextStep.BLOCK_SPOT_TRY_NEXT),
        (TransientError, NextStep.RETRY_SAME),
        (AttemptTimeoutError, NextStep.AVOID_REGION_TRY_NEXT),
        (AuthError, NextStep.OPEN_CIRCUIT_TRY_NEXT),
        (ConfigError, NextStep.OPEN_CIRCUIT_TRY_NEXT),
        (UnsupportedError, NextStep.DROP_OFFER_TRY_NEXT),
        (NotFoundError, NextStep.TREAT_AS_GONE),
        (AdapterError, NextStep.FAIL_ATTEMPT),
    ],
)
def test_every_error_class_has_a_next_step(cls: type[AdapterError], step: NextStep) -> None:
    assert classify_next_step(cls("s", "Code", "m")) is step


def test_every_adapter_error_subclass_is_classified() -> None:
    # Every subclass defined anywhere (the HA guard's NotLeaderError too), not only those some
    # earlier test happened to import: AdapterError itself is the one that fails the attempt.
    defined = [c for c in defined_exceptions() if issubclass(c, AdapterError) and c is not AdapterError]
    assert any(c.__name__ == "NotLeaderError" for c in defined)
    for cls in defined:
        assert classify_next_step(cls("s", "c", "m")) is not NextStep.FAIL_ATTEMPT, cls


def test_capacity_blocks_only_that_offer_until_ttl() -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    step = bl.record(
        CapacityError("aws-us", "InsufficientInstanceCapacity", "x"),
        offer(),
        FailoverPolicy(capacity_block_s=600),
    )
    assert step is NextStep.BLOCK_OFFER_TRY_NEXT
    assert bl.blocked(offer()) is not None
    assert bl.blocked(offer(zone="us-east-1b")) is None
    assert bl.blocked(offer(spot=True)) is None
    clock.now += 599
    assert bl.blocked(offer()) is not None
    clock.now += 1
    assert bl.blocked(offer()) is None
    assert bl.active() == []


def test_an_unrecognised_code_blocks_that_offer_for_the_unhealthy_ttl() -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    error = AdapterError("aws-us", "SomethingNew", "x")
    step = bl.record(error, offer(), FailoverPolicy(unhealthy_block_s=60), retried=True)
    assert step is NextStep.FAIL_ATTEMPT
    block = bl.blocked(offer())
    assert block is not None and "does not recognise" in block.reason and "SomethingNew" in block.reason
    assert bl.blocked(offer(itype="g5.xlarge")) is None  # the region's other offers stay open
    clock.now += 60
    assert bl.blocked(offer()) is None
    # On-prem (no retry in place) a backend's odd answer fails the attempt only: the capacity
    # reading says when the partition takes work.
    assert bl.record(error, offer(), FailoverPolicy(), retried=False) is NextStep.FAIL_ATTEMPT
    assert bl.blocked(offer()) is None


def test_quota_blocks_the_region_and_unsupported_never_expires() -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    bl.record(QuotaError("aws-us", "VcpuLimitExceeded", "x"), offer(), FailoverPolicy(quota_block_s=60))
    block = bl.blocked(offer(zone="us-east-1c", itype="g5.xlarge"))
    assert block is not None and "VcpuLimitExceeded" in block.reason
    bl.record(UnsupportedError("aws-us", "Unsupported", "x"), offer(zone="z9"), FailoverPolicy())
    clock.now += 10**9
    assert bl.blocked(offer(zone="z9")) is not None
    assert bl.blocked(offer()) is None
    assert bl.keys() == frozenset({"aws-us/z9/p4d.24xlarge/ondemand"})


def test_a_family_quota_blocks_that_family_in_that_market_only() -> None:
    """Review (issue 10): EC2's P-family on-demand vCPU quota leaves G launches, and P on spot, open."""
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    error = QuotaError("aws-us", "VcpuLimitExceeded", "x", types=("p",), market="ondemand")
    step = bl.record(error, offer(), FailoverPolicy(quota_block_s=60))
    assert step is NextStep.BLOCK_REGION_TRY_NEXT
    block = bl.blocked(offer(zone="us-east-1c", itype="p5.48xlarge"))
    assert block is not None and block.scope is BlockScope.QUOTA and "VcpuLimitExceeded" in block.reason
    assert bl.blocked(offer(itype="g5.xlarge")) is None
    assert bl.blocked(offer(spot=True)) is None
    assert bl.keys() == frozenset({"aws-us/us-east-1/quota:ondemand:p:1"})
    clock.now += 60
    assert bl.blocked(offer()) is None


def test_a_gang_refused_at_a_later_node_blocks_gangs_that_big_only() -> None:
    """Review (issue 14): room was left for the nodes before the refused one: one-node jobs fit."""
    bl = Blocklist(clock=FakeClock())
    error = QuotaError("aws-us", "VcpuLimitExceeded", "x", types=("g", "vt"), market="ondemand")
    error.nodes = 2  # (set by `dispatch.gang.launch_gang`: its second node was refused)
    bl.record(error, offer(itype="g5.xlarge"), FailoverPolicy(quota_block_s=60))
    assert bl.blocked(offer(itype="g5.xlarge")) is None
    assert bl.blocked(offer(itype="g5.xlarge"), nodes=2) is not None
    assert bl.blocked(offer(itype="g6.xlarge"), nodes=4) is not None
    assert bl.blocked(offer(itype="p4d.24xlarge"), nodes=4) is None


def test_the_blocklist_and_placement_read_a_quota_block_from_one_scope() -> None:
    """The block's target is its scope's one source: the blocklist kept a second copy beside it."""
    bl = Blocklist(clock=FakeClock())
    error = QuotaError("aws-us", "VcpuLimitExceeded", "x", types=("g", "vt"), market="spot")
    bl.record(error, offer(itype="g5.xlarge", spot=True), FailoverPolicy(quota_block_s=60))
    blocked = bl.keys()
    (scope,) = PlacementContext(blocked=blocked).quotas
    assert scope is parse_quota(scope.target) and scope.target in blocked
    assert bl.blocked(offer(itype="g6.xlarge", spot=True)) is not None
    assert bl.blocked(offer(itype="g6.xlarge")) is None and not hasattr(bl, "_quotas")


def test_a_spot_quota_blocks_the_regions_spot_offers_only() -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    error = SpotQuotaError("aws-us", "MaxSpotInstanceCountExceeded", "x")
    step = bl.record(error, offer(spot=True), FailoverPolicy(quota_block_s=60))
    assert step is NextStep.BLOCK_SPOT_TRY_NEXT and step.block_scope is BlockScope.REGION_SPOT
    assert bl.blocked(offer(zone="us-east-1c", itype="g5.xlarge", spot=True)) is not None
    assert bl.blocked(offer()) is None and bl.blocked(offer(zone="us-east-1c")) is None
    assert bl.keys() == frozenset({"aws-us/us-east-1/spot"})
    clock.now += 60
    assert bl.blocked(offer(spot=True)) is None


def test_a_timed_out_launch_blocks_its_region_for_the_unhealthy_ttl() -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    error = AttemptTimeoutError("aws-us", "AttemptTimeout", "no answer within 1200s")
    step = bl.record(error, offer(), FailoverPolicy(capacity_block_s=60, unhealthy_block_s=600))
    assert step is NextStep.AVOID_REGION_TRY_NEXT and step.block_scope is BlockScope.REGION
    assert bl.blocked(offer(zone="us-east-1c", itype="g5.xlarge")) is not None
    clock.now += 599
    assert bl.blocked(offer()) is not None
    clock.now += 1
    assert bl.blocked(offer()) is None


def test_a_transient_error_left_after_a_launchs_retries_avoids_the_region() -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    throttled = TransientError("aws-us", "RequestLimitExceeded", "Request limit exceeded.")
    assert bl.record(throttled, offer(), FailoverPolicy()) is NextStep.RETRY_SAME
    assert bl.blocked(offer()) is None
    policy = FailoverPolicy(unhealthy_block_s=600)
    assert bl.record(throttled, offer(), policy, retried=True) is NextStep.AVOID_REGION_TRY_NEXT
    assert bl.blocked(offer(zone="us-east-1c", itype="g5.xlarge")) is not None
    capacity = CapacityError("aws-us", "InsufficientInstanceCapacity", "x")
    assert bl.record(capacity, offer(zone="z2"), policy, retried=True) is NextStep.BLOCK_OFFER_TRY_NEXT


def test_site_block_and_blocks_never_shorten() -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    bl.block_site("aws-us", 100, "auth")
    bl.block_site("aws-us", 10, "again")
    clock.now += 50
    assert bl.blocked(offer()) is not None


@given(ttl=st.floats(min_value=0.001, max_value=1e6), elapsed=st.floats(min_value=0, max_value=2e6))
def test_blocked_iff_within_ttl(ttl: float, elapsed: float) -> None:
    clock = FakeClock()
    bl = Blocklist(clock=clock)
    bl.block_offer(offer(), ttl, "r")
    start = clock.now
    clock.now += elapsed
    assert (bl.blocked(offer()) is not None) == (clock.now < start + ttl)


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=2, reset_after_s=30, clock=clock)
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure("ServiceUnavailable")
    assert b.state is BreakerState.CLOSED
    b.record_failure("ServiceUnavailable")
    assert b.state is BreakerState.OPEN and not b.allow()
    clock.now += 30
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()
    assert not b.allow()  # one trial at a time
    b.record_failure("still down")
    assert b.state is BreakerState.OPEN
    clock.now += 30
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.failures == 0


def test_breaker_trip_opens_at_once_per_provider() -> None:
    clock = FakeClock()
    boards = CircuitBreakers(failure_threshold=5, reset_after_s=10, clock=clock)
    boards.get("aws-cn").trip("AuthFailure")
    assert boards.states() == {"aws-cn": BreakerState.OPEN}
    assert boards.get("aliyun").allow()
    assert boards.get("aws-cn").reason == "AuthFailure"


def test_retry_transient_retries_then_succeeds() -> None:
    clock = FakeClock()
    calls = []

    def flaky() -> str:
        calls.append(clock.now)
        if len(calls) < 3:
            raise TransientError("s", "RequestLimitExceeded", "slow down")
        return "ok"

    policy = RetryPolicy(max_attempts=5, max_total_s=60, initial_backoff_s=1, max_backoff_s=4)
    assert retry_transient(flaky, policy=policy, sleep=clock.sleep, clock=clock) == "ok"
    assert len(calls) == 3
    assert all(b - a <= 4 for a, b in itertools.pairwise(calls))


def test_retry_transient_gives_up_after_max_attempts_with_last_error() -> None:
    clock = FakeClock()
    calls = []

    def down() -> None:
        calls.append(1)
        raise TransientError("s", "ServiceUnavailable", str(len(calls)))

    with pytest.raises(TransientError, match="ServiceUnavailable: 4"):
        retry_transient(down, policy=RetryPolicy(max_attempts=4), sleep=clock.sleep, clock=clock)
    assert len(calls) == 4


def test_retry_transient_respects_total_time() -> None:
    clock = FakeClock()
    calls = []

    def down() -> None:
        calls.append(1)
        clock.now += 25
        raise TransientError("s", "Throttling", "x")

    with pytest.raises(TransientError):
        retry_transient(
            down, policy=RetryPolicy(max_attempts=100, max_total_s=60), sleep=clock.sleep, clock=clock
        )
    assert len(calls) == 3


def test_retry_transient_does_not_retry_other_errors() -> None:
    calls = []

    def no_stock() -> None:
        calls.append(1)
        raise CapacityError("s", "InsufficientInstanceCapacity", "x")

    with pytest.raises(CapacityError):
        retry_transient(no_stock, policy=RetryPolicy(), sleep=lambda s: None)
    assert len(calls) == 1
