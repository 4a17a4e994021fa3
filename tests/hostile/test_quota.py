"""Per-tenant quotas: the token bucket on an injected clock, limits from the policy, FILE:LINE:COL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from broker.model import JobSpec, TenantId
from broker.policy.schema_parts import Limits, LimitsOverride
from broker.quota import QuotaExceededError, Quotas, TokenBucket, resolve_limits
from tests.policy.test_check import BASE

A, B = TenantId("team-a"), TenantId("team-b")


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spec(env: int = 0, labels: int = 0, argv: int = 1) -> JobSpec:
    return JobSpec(
        name="j",
        command=tuple(f"a{i}" for i in range(argv)),
        env={f"E{i}": "x" for i in range(env)},
        labels={f"l{i}": "x" for i in range(labels)},
        runtime_estimate=timedelta(minutes=5),
    )


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=10, now=0.0)
    assert bucket.take(10, 0.0)
    assert not bucket.take(1, 0.0)
    assert bucket.take(3, 1.5)  # 1.5 s x 2/s = 3 tokens
    assert not bucket.take(1, 1.5)
    assert bucket.level(1000.0) == 10  # never more than the burst
    assert not bucket.take(11, 1000.0)  # all or nothing
    assert bucket.level(1000.0) == 10


def test_a_batch_takes_one_token_per_job_and_tenants_have_their_own_buckets() -> None:
    clock = FakeMonotonic()
    quotas = Quotas(lambda t: Limits(submit_rate=1.0, submit_burst=5), monotonic=clock)
    quotas.admit(A, 5, unfinished=0)
    with pytest.raises(QuotaExceededError) as err:
        quotas.admit(A, 1, unfinished=0)
    assert (err.value.limit, err.value.tenant) == ("submit_rate", A)
    quotas.admit(B, 5, unfinished=0)  # another tenant is not slowed down
    clock.now += 2.0
    with pytest.raises(QuotaExceededError):
        quotas.admit(A, 3, unfinished=0)  # 2 tokens back, 3 asked: nothing taken
    quotas.admit(A, 2, unfinished=0)


def test_a_raised_rate_applies_at_the_next_call_after_a_reload() -> None:
    """Held-out review: after a reload from 0.01/s (burst 1) to 100/s (burst 5) the first submit,
    6 s later, was refused (the 6 s had refilled at the old rate: 0.06 tokens)."""
    clock = FakeMonotonic()
    limits = {"now": Limits(submit_rate=0.01, submit_burst=1)}
    quotas = Quotas(lambda t: limits["now"], monotonic=clock)
    quotas.admit(A, 1, unfinished=0)
    limits["now"] = Limits(submit_rate=100.0, submit_burst=5)
    clock.now += 6.0
    quotas.admit(A, 5, unfinished=0)
    with pytest.raises(QuotaExceededError):
        quotas.admit(A, 1, unfinished=0)  # tokens spent stay spent
    limits["now"] = Limits(submit_rate=0.01, submit_burst=1)  # lowered: at most the new burst
    clock.now += 60.0
    quotas.admit(A, 1, unfinished=0)
    with pytest.raises(QuotaExceededError):
        quotas.admit(A, 1, unfinished=0)


def test_unfinished_jobs_and_spec_counts_are_bounded() -> None:
    quotas = Quotas(lambda t: Limits(max_queued_jobs=10, max_env=2, max_labels=1, max_argv=3))
    quotas.admit(A, 4, unfinished=6)
    with pytest.raises(QuotaExceededError) as err:
        quotas.admit(A, 5, unfinished=6)
    assert err.value.limit == "max_queued_jobs"
    quotas.check_spec(A, spec(env=2, labels=1, argv=3), "job")
    for bad, limit in ((spec(env=3), "max_env"), (spec(labels=2), "max_labels"), (spec(argv=4), "max_argv")):
        with pytest.raises(QuotaExceededError) as err:
            quotas.check_spec(A, bad, "job")
        assert err.value.limit == limit
    with pytest.raises(QuotaExceededError) as err:
        quotas.check_spec_bytes(A, 64 * 1024 + 1, "job")
    assert err.value.limit == "max_spec_bytes"


def test_watch_streams_are_counted_and_released() -> None:
    quotas = Quotas(lambda t: Limits(max_watch_streams=2))
    with quotas.watch_stream(A), quotas.watch_stream(A):
        with pytest.raises(QuotaExceededError) as err, quotas.watch_stream(A):
            pass
        assert err.value.limit == "max_watch_streams"
        with quotas.watch_stream(B):
            assert quotas.usage(A, 0).watch_streams == 2
    assert quotas.usage(A, 0).watch_streams == 0


def test_a_tenant_override_keeps_the_other_defaults() -> None:
    defaults = Limits(max_queued_jobs=7, max_env=9)
    mine = resolve_limits(defaults, LimitsOverride(max_queued_jobs=100))
    assert (mine.max_queued_jobs, mine.max_env) == (100, 9)
    assert resolve_limits(defaults, LimitsOverride()) == defaults


def test_policy_limits_are_checked_with_file_line_col(
    cli: Callable[[list[str]], int], write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    good = BASE.replace(
        "    entity_country: CN\n", "    entity_country: CN\n    limits: {max_queued_jobs: 50}\n"
    )
    assert cli(["policy", "check", str(write_policy(good + "limits: {submit_rate: 5, max_env: 10}\n"))]) == 0
    capsys.readouterr()
    text = good + "limits: {submit_rate: -1}\n"
    path = write_policy(text)
    assert cli(["policy", "check", str(path)]) != 0
    err = capsys.readouterr().err
    assert f"{path}:{text.count(chr(10))}:23: error: limits.submit_rate" in err
    for tiny in ("1e-300", "0.00009"):  # a refused call was told to retry in 300 digits of seconds
        text = good + f"limits: {{read_rate: {tiny}}}\n"
        path = write_policy(text)
        assert cli(["policy", "check", str(path)]) != 0
        assert f"{path}:{text.count(chr(10))}:21: error: limits.read_rate" in capsys.readouterr().err
    text = BASE.replace("    entity_country: CN\n", "    entity_country: CN\n    limits: {max_env: x}\n")
    path = write_policy(text)
    assert cli(["policy", "check", str(path)]) != 0
    line = text.splitlines().index("    limits: {max_env: x}") + 1
    assert f"{path}:{line}:23: error: tenants.0.limits.max_env" in capsys.readouterr().err


def test_the_readme_limits_are_the_defaults_and_validate() -> None:
    import re

    from ruamel.yaml import YAML

    from broker.policy.schema import Tenant
    from tests.brokerproc import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Quotas and hostile input") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    data = YAML(typ="safe").load(block.group(1))
    assert Limits.model_validate(data["limits"]) == Limits()
    tenant = Tenant.model_validate(data["tenants"][0])
    assert resolve_limits(Limits(), tenant.limits).max_queued_jobs == 500
