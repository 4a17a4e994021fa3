"""What every trace reader shares: the job a row becomes, the read's tally, and the cell parsers.

Each format's reader (`broker.sim.traces` for the Alibaba v2023 pod list and the plain CSV,
`broker.sim.trace_spot` for Alibaba's v2026 spot-GPU job list) turns rows into `TraceJob`s
with these, so a bad cell is refused the same way, naming its line and column, in each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from broker.durations import MAX_DURATION_S, parse_duration
from broker.errors import BrokerError
from broker.jobspec import Priority, Residency, Resources
from broker.validation import violations

TraceFormat = Literal["alibaba-v2023", "alibaba-spot-v2026", "csv"]
FORMATS: tuple[TraceFormat, ...] = ("alibaba-v2023", "alibaba-spot-v2026", "csv")


Row = tuple[int, dict[str, str]]
"""A trace row with the file line it was read from."""


class TraceError(BrokerError):
    """A trace file that cannot be read: names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a workload trace, before it becomes a `JobSpec`."""

    name: str
    submit_s: float
    runtime_s: float
    count: int = 0
    """Accelerators per node (0: a CPU-only job)."""
    accelerators: tuple[str, ...] = ()
    """Catalog accelerator names the job accepts; empty = any."""
    gpu_spec: bool = False
    """`accelerators` map the models of Alibaba's own pool (`gpu_spec` of the v2023 pod list,
    `gpu_model` of the v2026 job list), which a scenario's `gpu_spec: ignore` drops; a plain
    CSV's `accelerator` column is the job's own ask."""
    cpus: float = 1.0
    memory_gb: float = 1.0
    tenant: str | None = None
    max_wait_s: float | None = None
    residency: str = "any"
    priority: str = "normal"
    nodes: int = 1
    """Nodes (workers) of a gang, each with `count` accelerators, placed all-or-nothing."""
    group: str | None = None
    """The trace's own owner of a tenant-less job (the v2026 list's `organization`): every job
    of one group is given the same drawn tenant."""
    line: int = field(default=0, compare=False)
    """The row's line in the trace file, for errors (0: a generated job)."""
    undisclosed: str = field(default="", compare=False)
    """The trace's name for a model it does not disclose (v2026 `GPU-series-N`): the job takes
    any accelerator, and is counted under it (`any_accelerator`)."""


@dataclass
class TraceInfo:
    """What reading a trace kept and skipped, for the report."""

    path: str
    format: TraceFormat
    rows: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


class _RowSpec(BaseModel):
    """The job-spec fields a trace row sets, validated as a submitted spec would be."""

    model_config = ConfigDict(frozen=True)
    resources: Resources
    priority: Priority
    data_residency: Residency


class RowCheck:
    """Each distinct row shape validated once (a trace has few shapes and many rows)."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = columns
        """Spec field -> the trace column it comes from, to name in an error."""
        self.seen: dict[tuple[object, ...], str | None] = {}

    def problem(self, job: TraceJob) -> str | None:
        """`column: message` for a row no job spec accepts, else None."""
        key = (job.count, job.accelerators, job.cpus, job.memory_gb, job.priority, job.residency, job.nodes)
        if key not in self.seen:
            self.seen[key] = self._check(job)
        return self.seen[key]

    def _check(self, job: TraceJob) -> str | None:
        accelerators = {"count": job.count, "any_of": job.accelerators}
        resources = {
            "accelerators": accelerators, "cpus": job.cpus, "memory_gb": job.memory_gb, "nodes": job.nodes,
        }
        try:
            _RowSpec.model_validate(
                {"resources": resources, "priority": job.priority, "data_residency": job.residency}
            )
        except ValidationError as exc:
            first = violations(exc)[0]
            field = first.field.split("[")[0]
            return f"{self.columns.get(field, field)}: {first.description}"
        return None


def seconds(text: str) -> float:
    """Seconds in any number notation (`600`, `1.2e6`, as other tools export them) or a duration
    (`1h30m`); a negative number is refused as one, not as "not a duration"."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text.strip()).total_seconds()
    if value < 0:
        raise ValueError(f"must be >= 0, got {value:g}")
    return parse_duration(value).total_seconds()  # (the same 10-year and finite limits)


LATEST_MOMENT_S = 1e11
"""The largest time a trace may give (the year 5138 in Unix epoch seconds): more is milliseconds."""


def moment(text: str) -> float:
    """A point in time in seconds: from the trace's start (`600`, `1h`) or Unix epoch seconds
    (`1.7e9`); arrivals count from the trace's first, so only their span has a limit (`check_span`)."""
    try:
        value = float(text)
    except ValueError:
        return seconds(text)
    if value < 0:
        raise ValueError(f"must be >= 0, got {value:g}")
    # (read as seconds, a week of millisecond stamps would span 19 years)
    if math.isfinite(value) and value > LATEST_MOMENT_S:
        raise ValueError(f"{value:g} is too large for seconds (milliseconds? give seconds)")
    return value


def check_span(jobs: list[TraceJob], path: str, name: str) -> None:
    """Refuse jobs (sorted by submit time) whose arrivals, column `name`, span more than ten years."""
    if jobs and jobs[-1].submit_s - jobs[0].submit_s > MAX_DURATION_S:
        first, last = jobs[0], jobs[-1]
        years = (last.submit_s - first.submit_s) / (365 * 86400)
        raise TraceError(
            f"{path}:{last.line}: {name}: {last.submit_s:g} is {years:,.1f} years after the first "
            f"arrival ({first.submit_s:g}, line {first.line}); arrivals may span at most 10 years "
            "(give every time from the trace's start, or every one in Unix epoch seconds)"
        )


def column(
    row: Mapping[str, str | None], name: str, parse: Callable[[str], float], default: float | None = None
) -> float:
    """One column's value; ValueError naming the column when it does not parse."""
    text = (row.get(name) or "").strip()
    if not text and default is not None:
        return default
    try:
        value = parse(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}" if text else f"{name}: required") from exc
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number")
    return value


def number(text: str) -> float:
    """A number column (Python's own `could not convert string to float` named no rule)."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {text!r}") from None


def non_negative(text: str) -> float:
    """A number column that cannot be below zero (a request of -8 CPUs is a broken row)."""
    value = number(text)
    if value < 0:
        raise ValueError(f"must be >= 0, got {value:g}")
    return value


def whole(text: str) -> float:
    """An integer column (`int` alone would call `2.5` not a number at all)."""
    try:
        value = float(text)
    except ValueError:  # (Python's `could not convert string to float` named no rule)
        raise ValueError(f"must be a whole number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if value != int(value):
        raise ValueError("must be a whole number")
    return value
