"""Policy schema parts: the base of every section, and the burst section's smaller settings."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from broker.durations import Duration
from broker.numbers import NoBoolNumbers


class _Doc(NoBoolNumbers):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class SiteBurst(_Doc):
    max_provisioning: int = Field(default=4, ge=0, description="Instances being provisioned at once.")
    max_instances: int | None = Field(default=None, ge=0)
    max_idle: Duration = Field(default="10m", validate_default=True, description="No effect: none idles.")
    spot_interruption_risk: float = Field(default=0.05, ge=0, le=1, description="Per hour.")
    provisioning_p95: Duration = Field(
        default="5m",
        validate_default=True,
        description="Time to bring up an instance here, 95th percentile: a job bursts no later than "
        "its deadline minus this, and each spot restart costs this much time.",
    )


class FailureThrottle(_Doc):
    window: Duration = Field(default="10m", validate_default=True)
    min_attempts: int = Field(default=5, ge=1)
    max_failure_rate: float = Field(default=0.5, gt=0, le=1)
    cooldown: Duration = Field(default="15m", validate_default=True)


class Budget(_Doc):
    global_monthly_cap: float | None = Field(default=None, ge=0, description="All burst spend, per month.")
    default_tenant_monthly: float | None = Field(default=None, ge=0)
    alert_fraction: float = Field(default=0.8, gt=0, le=1)


class BlocklistTtl(_Doc):
    capacity: Duration = Field(default="3m", validate_default=True)
    quota: Duration = Field(default="30m", validate_default=True)
    unhealthy: Duration = Field(default="10m", validate_default=True)


class Retries(_Doc):
    max_attempts: int = Field(default=5, ge=1, description="Attempts per job (each on a new offer).")
    max_transient_retries: int = Field(default=3, ge=0)
    backoff_initial: Duration = Field(default="1s", validate_default=True)
    backoff_max: Duration = Field(default="60s", validate_default=True)


class PreemptPatient(_Doc):
    """Stop a patient on-prem job (long max_wait) rather than burst an urgent one (`broker.burst.swap`)."""

    enabled: bool = Field(
        default=False,
        description="A job about to burst takes the units of a patient job that started recently "
        "instead; that job goes back to the queue with its wait mostly ahead (simulator and live).",
    )
    min_max_wait: Duration = Field(
        default="2h",
        validate_default=True,
        description="Only jobs whose max_wait is at least this long are stopped (best-effort work).",
    )
    max_restarts: int = Field(
        default=1, ge=0, description="A job that already ran this many times before is not stopped again."
    )
    min_slack: Duration = Field(
        default="0s",
        validate_default=True,
        description="Only jobs whose own start deadline (arrival + max_wait) is at least this far "
        "ahead are stopped: one stopped past it would finish late for sure.",
    )
    max_lost_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="The work a stop loses (on-prem price x units x time since its start or last "
        "checkpoint) must be at most this share of what the burst would cost over on-prem.",
    )


MIN_RATE = 0.0001
"""The slowest submit or read rate a policy may set: one token in under three hours (1e-300 passed,
and a refused call was told to retry in a number of seconds 300 digits long)."""


class Limits(_Doc):
    """Per-tenant quotas on what the API accepts; exceeding one answers RESOURCE_EXHAUSTED."""

    max_queued_jobs: int = Field(
        default=10_000, ge=0, description="Unfinished jobs (queued to running) a tenant may have at once."
    )
    submit_rate: float = Field(
        default=100.0, ge=MIN_RATE, le=1_000_000,
        description="Jobs per second a tenant may submit (token refill).",
    )
    submit_burst: int = Field(
        default=2_000, ge=1, le=10_000_000, description="Jobs a tenant may submit at once (bucket size)."
    )
    max_spec_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Encoded size of one job spec."
    )
    max_env: int = Field(default=256, ge=0, le=4096, description="Environment entries per job.")
    max_labels: int = Field(default=64, ge=0, le=1024, description="Labels per job.")
    max_argv: int = Field(default=1024, ge=1, le=4096, description="Command arguments per job.")
    max_watch_streams: int = Field(default=64, ge=0, description="Concurrent WatchJob/logs --follow.")
    read_rate: float = Field(
        default=200.0, ge=MIN_RATE, le=1_000_000,
        description="Read tokens per second a tenant's calls may take: GetJob, ListJobs, GetSpend and "
        "opening WatchJob take 1; GetStatus, ExplainPlacement, ListOffers and opening StreamJobLogs 10.",
    )
    read_burst: int = Field(
        default=2_000, ge=10, le=10_000_000, description="Read tokens a tenant may take at once (bucket size)"
    )


class LimitsOverride(_Doc):
    """A tenant's own limits; unset fields take the policy's `limits`."""

    max_queued_jobs: int | None = Field(default=None, ge=0)
    submit_rate: float | None = Field(default=None, ge=MIN_RATE, le=1_000_000)
    submit_burst: int | None = Field(default=None, ge=1, le=10_000_000)
    max_spec_bytes: int | None = Field(default=None, ge=1024, le=16 * 1024 * 1024)
    max_env: int | None = Field(default=None, ge=0, le=4096)
    max_labels: int | None = Field(default=None, ge=0, le=1024)
    max_argv: int | None = Field(default=None, ge=1, le=4096)
    max_watch_streams: int | None = Field(default=None, ge=0)
    read_rate: float | None = Field(default=None, ge=MIN_RATE, le=1_000_000)
    read_burst: int | None = Field(default=None, ge=10, le=10_000_000)
