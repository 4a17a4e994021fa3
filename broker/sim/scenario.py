"""Scenario files (`configs/scenarios/*.yaml`): the simulated world around a policy.

A scenario sets the workload transform (time compression, tenant mix, which trace jobs to
keep) and the seeded distributions of the simulated backends: provisioning delays, per-site
stock-outs and spot interruptions. Command-line flags override `time_scale`, `onprem_gpus`
and `seed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from broker.durations import parse_duration
from broker.errors import BrokerError


class ScenarioError(BrokerError):
    """A scenario file that does not validate; the message names the field."""


def _seconds(v: Any) -> Any:
    return None if v is None else parse_duration(v).total_seconds()


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Delay(_M):
    """A triangular distribution of seconds (min, mode, max)."""

    min_s: float = Field(default=60.0, ge=0)
    mode_s: float = Field(default=120.0, ge=0)
    max_s: float = Field(default=300.0, ge=0)


class StockOuts(_M):
    """Stock-out episodes of a site: a Poisson process of starts with exponential durations."""

    per_day: float = Field(default=0.0, ge=0, description="Episodes per simulated day.")
    mean_duration_s: float = Field(default=1800.0, gt=0)
    fail_after_s: float = Field(default=20.0, ge=0, description="How long a launch takes to fail.")


class SiteWorld(_M):
    """Per-site overrides of the scenario defaults."""

    provisioning: Delay | None = None
    stockouts: StockOuts | None = None
    spot_interruptions_per_hour: float | None = Field(default=None, ge=0)


class RuntimeEstimates(_M):
    """How far users' runtime estimates are off: estimate = actual x bias(tenant) x lognormal(0, sigma)."""

    bias: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="Per tenant: how many times the actual runtime users estimate."
    )
    default_bias: float = Field(default=1.0, gt=0, description="The bias of tenants not in `bias`.")
    sigma: float = Field(default=0.0, ge=0, le=5, description="Spread of the lognormal noise (0: none).")


class Scenario(_M):
    """The simulated world; every random draw comes from `seed`."""

    name: str = "default"
    description: str = ""
    seed: int = 0
    time_scale: float = Field(default=1.0, gt=0, description="Inter-arrival times are divided by this.")
    onprem_gpus: int | None = Field(default=None, ge=1, description="Scale on-prem GPU partitions to N.")
    max_runtime_s: float | None = Field(default=None, gt=0, description="Drop trace jobs running longer.")
    gpu_spec: Literal["keep", "ignore"] = Field(default="keep", description="Honour trace GPU-model lists.")
    no_spot_over_s: float | None = Field(
        default=None,
        gt=0,
        description="Jobs longer than this are submitted with spot: never (no checkpoints).",
    )
    checkpoint_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="Jobs longer than this are submitted with `checkpoint: {interval: this}`.",
    )
    tenants: dict[str, float] = Field(default_factory=dict, description="Tenant weights; empty = uniform.")
    runtime_estimates: RuntimeEstimates | None = Field(
        default=None, description="Users' runtime estimates vs the actual runtimes; None: exact."
    )
    provisioning: Delay = Delay()
    stockouts: StockOuts = StockOuts()
    spot_interruptions_per_hour: float | None = Field(
        default=None, ge=0, description="None: each site's burst.sites spot_interruption_risk."
    )
    sites: dict[str, SiteWorld] = Field(default_factory=dict)
    redecide_head: int = Field(default=8, ge=1, description="Queued jobs re-decided per capacity event.")
    audit_every: int = Field(default=0, ge=0, description="Audit every Nth job's placements; 0 = auto.")
    sample_points: int = Field(default=1500, ge=10, description="Time-series samples for the plots.")

    @field_validator("max_runtime_s", "no_spot_over_s", "checkpoint_interval_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return _seconds(v)

    def provisioning_for(self, site: str) -> Delay:
        w = self.sites.get(site)
        return w.provisioning if w is not None and w.provisioning is not None else self.provisioning

    def stockouts_for(self, site: str) -> StockOuts:
        w = self.sites.get(site)
        return w.stockouts if w is not None and w.stockouts is not None else self.stockouts

    def interruptions_for(self, site: str, policy_risk: float) -> float:
        w = self.sites.get(site)
        if w is not None and w.spot_interruptions_per_hour is not None:
            return w.spot_interruptions_per_hour
        return policy_risk if self.spot_interruptions_per_hour is None else self.spot_interruptions_per_hour


def load_scenario(path: Path | None) -> Scenario:
    """Read a scenario YAML file (None: the defaults)."""
    if path is None:
        return Scenario()
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    try:
        return Scenario.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"{path}: {where}: {first['msg']}") from exc
