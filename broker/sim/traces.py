"""Workload traces: the Alibaba GPU v2023 pod list and a plain CSV, both to `TraceJob`s.

The format is detected from the header row when not given (`detect_format`). Gzip'ed files
are read transparently.

Alibaba GPU v2023 (`openb_pod_list_*.csv`, Weng et al., ATC '23), per pod:
arrival = `creation_time`; run time = `deletion_time - scheduled_time` (pods never scheduled
are skipped: their run time is unknown); GPUs = `num_gpu`, where a shared pod (`gpu_milli` <
1000) takes one whole GPU (the broker does not share devices); `gpu_spec` models map to
catalog accelerators by `GPU_SPEC_MODELS` (models the catalog lacks are dropped, and a pod
whose list becomes empty may run on any accelerator); `qos` maps to a priority by `QOS_PRIORITY`.

Plain CSV columns (header required; `submit_time` and `runtime` are required):
`submit_time` (s from trace start), `runtime` (s or a duration such as 1h30m),
`accelerator` (catalog names separated by `|`, empty = any), `count`, `tenant`, `max_wait`
(s or duration, empty = the policy default), `residency` (`any` or `cn-mainland`), and
optionally `cpus`, `memory_gb`, `priority` (low/normal/high), `name`.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from broker.durations import parse_duration
from broker.errors import BrokerError
from broker.jobspec import Priority, Residency, Resources
from broker.validation import did_you_mean, violations

TraceFormat = Literal["alibaba-v2023", "csv"]
FORMATS: tuple[TraceFormat, ...] = ("alibaba-v2023", "csv")

GPU_SPEC_MODELS: dict[str, str | None] = {
    "T4": "T4",
    "A10": "A10",
    "V100M16": "V100",
    "V100M32": "V100-32GB",
    "P100": None,
    "G1": None,
    "G2": None,
    "G3": None,
}
"""Alibaba `gpu_spec` model -> catalog accelerator (None: not in the catalog, dropped).
G1-G3 are undisclosed internal models; P100 has no catalog entry."""

QOS_PRIORITY = {"LS": "normal", "Burstable": "normal", "Guaranteed": "high", "BE": "low"}
"""Alibaba `qos` -> job priority (latency-sensitive is normal, best-effort is low)."""


class TraceError(BrokerError):
    """A trace file that cannot be read: names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a workload trace, before it becomes a `JobSpec`."""

    name: str
    submit_s: float
    runtime_s: float
    count: int = 0
    """Accelerators (0: a CPU-only job)."""
    accelerators: tuple[str, ...] = ()
    """Catalog accelerator names the job accepts; empty = any."""
    gpu_spec: bool = False
    """`accelerators` map Alibaba's `gpu_spec` models, which describe Alibaba's pool (a scenario's
    `gpu_spec: ignore` drops them); a plain CSV's `accelerator` column is the job's own ask."""
    cpus: float = 1.0
    memory_gb: float = 1.0
    tenant: str | None = None
    max_wait_s: float | None = None
    residency: str = "any"
    priority: str = "normal"
    line: int = field(default=0, compare=False)
    """The row's line in the trace file, for errors (0: a generated job)."""


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


PLAIN_COLUMNS = (
    "name", "submit_time", "runtime", "accelerator", "count", "tenant", "max_wait", "residency",
    "cpus", "memory_gb", "priority",
)
"""Every column a plain CSV trace may have (in `write_csv`'s order); only the first three are
required (`name` defaults to job-LINE)."""

COLUMNS: dict[TraceFormat, dict[str, str]] = {
    "csv": {
        "resources.accelerators.count": "count",
        "resources.accelerators.any_of": "accelerator",
        "resources.cpus": "cpus",
        "resources.memory_gb": "memory_gb",
        "priority": "priority",
        "data_residency": "residency",
    },
    "alibaba-v2023": {
        "resources.accelerators.count": "num_gpu",
        "resources.accelerators.any_of": "gpu_spec",
        "resources.cpus": "cpu_milli",
        "resources.memory_gb": "memory_mib",
        "priority": "qos",
    },
}
"""Spec field -> the trace column it comes from, to name in an error."""


class _Checked:
    """Each distinct row shape validated once (a trace has few shapes and many rows)."""

    def __init__(self, fmt: TraceFormat) -> None:
        self.columns = COLUMNS[fmt]
        self.seen: dict[tuple[object, ...], str | None] = {}

    def problem(self, job: TraceJob) -> str | None:
        """`column: message` for a row no job spec accepts, else None."""
        key = (job.count, job.accelerators, job.cpus, job.memory_gb, job.priority, job.residency)
        if key not in self.seen:
            self.seen[key] = self._check(job)
        return self.seen[key]

    def _check(self, job: TraceJob) -> str | None:
        accelerators = {"count": job.count, "any_of": job.accelerators}
        resources = {"accelerators": accelerators, "cpus": job.cpus, "memory_gb": job.memory_gb}
        try:
            _RowSpec.model_validate(
                {"resources": resources, "priority": job.priority, "data_residency": job.residency}
            )
        except ValidationError as exc:
            first = violations(exc)[0]
            field = first.field.split("[")[0]
            return f"{self.columns.get(field, field)}: {first.description}"
        return None


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8-sig"))


def detect_format(header: Iterable[str]) -> TraceFormat:
    """`alibaba-v2023` when the header has the pod-list columns, `csv` when it has submit/runtime."""
    cols = {c.strip() for c in header}
    if {"creation_time", "deletion_time", "scheduled_time", "num_gpu"} <= cols:
        return "alibaba-v2023"
    if {"submit_time", "runtime"} <= cols:
        return "csv"
    raise TraceError(
        f"unknown trace header {sorted(cols)}: expected the Alibaba GPU v2023 pod list "
        "(creation_time, scheduled_time, deletion_time, num_gpu, ...) or a CSV with "
        "submit_time and runtime"
    )


def map_gpu_spec(spec: str) -> tuple[str, ...]:
    """`V100M16|V100M32` -> (`V100`, `V100-32GB`); unknown or uncatalogued models are dropped."""
    out: list[str] = []
    for model in spec.split("|"):
        name = GPU_SPEC_MODELS.get(model.strip())
        if name is not None and name not in out:
            out.append(name)
    return tuple(out)


def _alibaba(rows: Iterator[dict[str, str]], info: TraceInfo, max_runtime_s: float | None) -> list[TraceJob]:
    jobs: list[TraceJob] = []
    checked = _Checked("alibaba-v2023")
    for line, row in enumerate(rows, start=2):
        info.rows += 1
        try:
            if not (row.get("scheduled_time") or "").strip():
                info.skip("never scheduled (run time unknown)")
                continue
            job = _pod(row, line)
            if max_runtime_s is not None and job.runtime_s > max_runtime_s:
                info.skip("run time above the scenario's max_runtime")
                continue
        except ValueError as exc:
            raise TraceError(f"{info.path}:{line}: {exc}") from exc
        if (why := checked.problem(job)) is not None:
            raise TraceError(f"{info.path}:{line}: {why}")
        jobs.append(job)
    return jobs


def _pod(row: dict[str, str], line: int) -> TraceJob:
    """One scheduled pod; ValueError naming the column of a cell that does not parse.

    `name`, `gpu_spec` and `qos` may be missing (Alibaba's other pod lists, such as
    `openb_pod_list_default.csv`, may come without `gpu_spec`): the pod then runs on any
    accelerator, at normal priority."""
    scheduled = _column(row, "scheduled_time", float)
    deleted = _column(row, "deletion_time", float)
    if deleted < scheduled:
        raise ValueError(f"deletion_time: before scheduled_time ({scheduled:g})")
    num_gpu, milli = int(_column(row, "num_gpu", _whole)), _column(row, "gpu_milli", float, 0)
    if num_gpu < 0:
        raise ValueError("num_gpu: must be >= 0")
    if not 0 <= milli <= 1000:
        raise ValueError("gpu_milli: must be between 0 and 1000 (thousandths of one GPU)")
    count = num_gpu if num_gpu > 0 else (1 if milli > 0 else 0)
    return TraceJob(
        name=(row.get("name") or f"pod-{line - 1}").strip(),
        submit_s=_column(row, "creation_time", float),
        runtime_s=max(1.0, deleted - scheduled),
        count=count,
        accelerators=map_gpu_spec(row.get("gpu_spec") or "") if count else (),
        gpu_spec=True,
        cpus=max(0.1, _column(row, "cpu_milli", float) / 1000),
        memory_gb=max(0.1, _column(row, "memory_mib", float) / 1024),
        priority=QOS_PRIORITY.get((row.get("qos") or "").strip(), "normal"),
        line=line,
    )


def _seconds(text: str) -> float:
    """Seconds in any number notation (`600`, `1.2e6`, as other tools export them) or a duration
    (`1h30m`); a negative number is refused as one, not as "not a duration"."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text.strip()).total_seconds()
    if value < 0:
        raise ValueError(f"must be >= 0, got {value:g}")
    return parse_duration(value).total_seconds()  # (the same 10-year and finite limits)


def _column(
    row: dict[str, str], name: str, parse: Callable[[str], float], default: float | None = None
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


def _plain(rows: Iterator[dict[str, str]], info: TraceInfo, max_runtime_s: float | None) -> list[TraceJob]:
    jobs: list[TraceJob] = []
    checked = _Checked("csv")
    for line, row in enumerate(rows, start=2):
        info.rows += 1
        try:
            runtime = max(1.0, _column(row, "runtime", _seconds))
            if max_runtime_s is not None and runtime > max_runtime_s:
                info.skip("run time above the scenario's max_runtime")
                continue
            accel = tuple(a.strip() for a in (row.get("accelerator") or "").split("|") if a.strip())
            count = int(_column(row, "count", _whole, 1 if accel else 0))
            if accel and count == 0:  # (read as CPU-only, the accelerator it names was dropped unsaid)
                raise ValueError(f"count: 0 with accelerator {'|'.join(accel)} (a CPU-only job names none)")
            wait = (row.get("max_wait") or "").strip()
            job = TraceJob(
                name=(row.get("name") or f"job-{line - 1}").strip(),
                submit_s=_column(row, "submit_time", _seconds),
                runtime_s=runtime,
                count=count,
                accelerators=accel,
                cpus=_column(row, "cpus", float, 1),
                memory_gb=_column(row, "memory_gb", float, 1),
                tenant=(row.get("tenant") or "").strip() or None,
                max_wait_s=_column(row, "max_wait", _seconds) if wait else None,
                residency=(row.get("residency") or "any").strip() or "any",
                priority=(row.get("priority") or "normal").strip() or "normal",
                line=line,
            )
        except ValueError as exc:
            raise TraceError(f"{info.path}:{line}: {exc}") from exc
        if (why := checked.problem(job)) is not None:
            raise TraceError(f"{info.path}:{line}: {why}")
        jobs.append(job)
    return jobs


def _whole(text: str) -> float:
    """An integer column (`int` alone would call `2.5` not a number at all)."""
    value = float(text)
    if value != int(value):
        raise ValueError("must be a whole number")
    return value


def _whole_rows(
    reader: csv.DictReader[str], path: Path, width: int, short_ok: bool
) -> Iterator[dict[str, str]]:
    """The rows, refusing one with more cells than the header, and with fewer unless `short_ok`
    (a cut or shifted pod-list row would read its missing cells as empty: a pod "never
    scheduled", say; a hand-written plain CSV row may stop before its optional columns)."""
    last = reader.line_num
    for row in reader:
        if any(v is not None and "\n" in v for v in row.values() if isinstance(v, str)):
            # A quote left open reads every line up to the next quote as one cell.
            said = f"a quote is left open (the quoted cell reads on through line {reader.line_num})"
            raise TraceError(f"{path}:{last + 1}: {said}")
        last = reader.line_num
        extra = row.get(None)  # (DictReader puts extra cells under None)
        cells = width + len(extra) if extra else sum(1 for v in row.values() if v is not None)
        if cells > width or (cells < width and not short_ok):
            raise TraceError(f"{path}:{reader.line_num}: {cells} cells, the header has {width}")
        yield row


def read_trace(
    path: Path, fmt: TraceFormat | None = None, *, max_runtime_s: float | None = None
) -> tuple[list[TraceJob], TraceInfo]:
    """Read a trace (format from the header unless given), sorted by submit time."""
    try:
        reader = csv.DictReader(_open_text(path))
        # Columns are matched by name, so `submit_time, runtime` reads as written.
        header = reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:  # (EOFError: a cut .gz)
        raise TraceError(f"{path}: cannot read: {exc}") from exc
    if (blank := [i for i, c in enumerate(header, start=1) if not c]) and len(header) > 1:
        raise TraceError(f"{path}:1: column {blank[0]} of the header has no name")
    if twice := sorted({c for c in header if header.count(c) > 1}):
        raise TraceError(f"{path}:1: column {twice[0]} appears twice in the header")
    found = detect_format(header)
    if fmt is not None and fmt != found:
        raise TraceError(f"{path}: --trace-format {fmt} given but the header is {found}")
    if found == "csv" and (unknown := [c for c in header if c and c not in PLAIN_COLUMNS]):
        # A misspelt column would be read as absent (an accelerator job as CPU-only), silently.
        why = "; ".join(f"{c}: unknown column{did_you_mean(c, PLAIN_COLUMNS)}" for c in unknown)
        raise TraceError(f"{path}:1: {why} (a plain CSV's columns: {', '.join(PLAIN_COLUMNS)})")
    info = TraceInfo(path=str(path), format=found)
    try:
        rows = _whole_rows(reader, path, len(header), short_ok=found == "csv")
        jobs = (_alibaba if found == "alibaba-v2023" else _plain)(rows, info, max_runtime_s)
    except csv.Error as exc:
        raise TraceError(f"{path}:{reader.line_num}: {exc}") from exc
    jobs.sort(key=lambda j: (j.submit_s, j.name))
    info.kept = len(jobs)
    return jobs, info


def write_csv(jobs: Iterable[TraceJob], out: io.TextIOBase) -> None:
    """Write jobs in the plain CSV format (what `read_trace` reads back)."""
    w = csv.writer(out)
    w.writerow(PLAIN_COLUMNS)
    for j in jobs:
        w.writerow(
            [
                j.name,
                _cell(j.submit_s),
                _cell(j.runtime_s),
                "|".join(j.accelerators),
                j.count,
                j.tenant or "",
                "" if j.max_wait_s is None else _cell(j.max_wait_s),
                j.residency,
                _cell(j.cpus),
                _cell(j.memory_gb),
                j.priority,
            ]
        )


def _cell(value: float) -> str:
    """A number as it reads back exactly (`%g` kept 6 digits: 11,676,412 s became 1.16764e+07)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)
