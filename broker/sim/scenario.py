"""Scenario files (`configs/scenarios/*.yaml`): the simulated world around a policy.

A scenario sets the workload transform (time compression, tenant mix, which trace jobs to
keep) and the seeded distributions of the simulated backends: provisioning delays, per-site
stock-outs and spot interruptions. Command-line flags override `time_scale`, `onprem_gpus`
and `seed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from broker.durations import parse_duration
from broker.errors import BrokerError
from broker.numbers import NoBoolNumbers
from broker.validation import did_you_mean, violations
from broker.yamlfile import PolicyError, Problem, parse_yaml, position, validation_problems


class ScenarioError(BrokerError):
    """A scenario file that does not validate; the message names the field."""


def _seconds(v: Any) -> Any:
    return None if v is None else parse_duration(v).total_seconds()


class _M(NoBoolNumbers):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Delay(_M):
    """A triangular distribution of seconds (min, mode, max)."""

    min_s: float = Field(default=60.0, ge=0)
    mode_s: float = Field(default=120.0, ge=0)
    max_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _in_order(self) -> Delay:
        # (out of order, the draw swapped min and max and said nothing)
        if not self.min_s <= self.mode_s <= self.max_s:
            raise ValueError(
                f"must have min_s <= mode_s <= max_s, got {self.min_s:g}, {self.mode_s:g}, {self.max_s:g}"
            )
        return self


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
    gpu_spec: Literal["keep", "ignore"] = Field(
        default="keep",
        description="Honour the Alibaba traces' models of their own pool (the v2023 pod list's gpu_spec, "
        "the v2026 spot job list's gpu_model); a plain CSV's accelerator column is always honoured: "
        "it names the job's own catalog accelerators.",
    )
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

    @field_validator("checkpoint_interval_s")
    @classmethod
    def _whole_seconds(cls, v: float | None) -> float | None:
        if v is not None and not float(v).is_integer():
            raise ValueError(f"must be a whole number of seconds (a job's checkpoint interval is), not {v:g}")
        return v

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


def load_scenario(
    path: Path | None, *, sites: Iterable[str] | None = None, tenants: Iterable[str] | None = None
) -> Scenario:
    """Read a scenario YAML file (None: the defaults); errors name FILE:LINE:COL and the field.

    With the policy's `sites` and `tenants`, a scenario naming one it lacks is refused (a typo
    would silently leave that site's world at the defaults, or draw jobs for no tenant)."""
    if path is None:
        return Scenario()
    try:
        data = parse_yaml(path.read_text(), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from exc
    except PolicyError as exc:  # (the YAML reader's positioned syntax error)
        raise ScenarioError(_at(exc.problems[0])) from exc
    if data is not None and not isinstance(data, dict):
        raise ScenarioError(f"{path}:1:1: a scenario must be a YAML mapping")
    try:
        scenario = Scenario.model_validate(data or {})
    except ValidationError as exc:
        raise ScenarioError(_at(validation_problems(exc, data, str(path))[0])) from exc
    for field, names in (("sites", sites), ("tenants", tenants)):
        known = sorted(set(names or ()))
        unknown = [name for name in getattr(scenario, field) if known and name not in known]
        if unknown:
            line, col = position(data, [field, unknown[0]], key=True)
            hint = did_you_mean(unknown[0], known) or f" (the policy's: {', '.join(known)})"
            raise ScenarioError(f"{path}:{line}:{col}: {field}.{unknown[0]}: not in the policy{hint}")
    return scenario


def with_flags(scenario: Scenario, flags: dict[str, Any]) -> Scenario:
    """The scenario with command-line overrides, validated as the file is (the error names the flag)."""
    try:
        return Scenario.model_validate({**scenario.model_dump(), **flags})
    except ValidationError as exc:
        first = violations(exc)[0]
        raise ScenarioError(f"--{first.field.replace('_', '-')}: {first.description}") from exc


def _at(problem: Problem) -> str:
    """`FILE:LINE:COL: message` (the command adds its own `error:`)."""
    return f"{problem.file}:{problem.line}:{problem.col}: {problem.message}"
