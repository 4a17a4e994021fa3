"""Workload traces: the Alibaba GPU v2023 pod list, a plain CSV and (`broker.sim.trace_spot`)
Alibaba's v2026 spot-GPU job list, each to `TraceJob`s.

The format is detected from the header row when not given (`detect_format`). Gzip'ed files
are read transparently.

Alibaba GPU v2023 (`openb_pod_list_*.csv`, Weng et al., ATC '23), per pod:
arrival = `creation_time`; run time = `deletion_time - scheduled_time` (pods never scheduled
are skipped: their run time is unknown); GPUs = `num_gpu`, where a shared pod (`gpu_milli` <
1000) takes one whole GPU (the broker does not share devices); `gpu_spec` models map to
catalog accelerators by `GPU_SPEC_MODELS` (models the catalog lacks are dropped, and a pod
whose list becomes empty may run on any accelerator); `qos` maps to a priority by `QOS_PRIORITY`.

Plain CSV columns (header required; `submit_time` and `runtime` are required):
`submit_time` (s from trace start, or Unix epoch seconds: arrivals count from the first),
`runtime` (s or a duration such as 1h30m), `accelerator` (catalog names separated by `|`, empty =
any), `count` (per node), `tenant`,
`max_wait` (s or duration, empty = the policy default), `residency` (`any` or `cn-mainland`),
and optionally `cpus`, `memory_gb`, `priority` (low/normal/high), `name`, `nodes` (a gang),
`group` (jobs of one group without a `tenant` get one drawn tenant).
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from broker.sim.trace_rows import (
    FORMATS,
    Row,
    RowCheck,
    TraceError,
    TraceFormat,
    TraceInfo,
    TraceJob,
    check_span,
    column,
    moment,
    non_negative,
    number,
    seconds,
    whole,
)
from broker.sim.trace_spot import SPOT_COLUMNS, is_spot_header, misspelt, spot_jobs
from broker.validation import did_you_mean

__all__ = ["FORMATS", "TraceError", "TraceFormat", "TraceInfo", "TraceJob", "read_trace", "write_csv"]

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


PLAIN_COLUMNS = (
    "name", "submit_time", "runtime", "accelerator", "count", "tenant", "max_wait", "residency",
    "cpus", "memory_gb", "priority", "nodes", "group",
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
        "resources.nodes": "nodes",
    },
    "alibaba-v2023": {
        "resources.accelerators.count": "num_gpu",
        "resources.accelerators.any_of": "gpu_spec",
        # (checked as the spec's fields, in their units: the limit a message names is in those)
        "resources.cpus": "cpu_milli (as CPUs, 1,000 to a CPU)",
        "resources.memory_gb": "memory_mib (as GB, 1,024 MiB to a GB)",
        "priority": "qos",
    },
    "alibaba-spot-v2026": SPOT_COLUMNS,
}
"""Spec field -> the trace column it comes from, to name in an error."""


POD_COLUMNS = (
    "name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
    "creation_time", "deletion_time", "scheduled_time",
)  # fmt: skip
"""The Alibaba GPU v2023 pod list's columns (`gpu_spec`, `qos` and `name` may be missing)."""

KNOWN = (*PLAIN_COLUMNS, "creation_time", "scheduled_time", "deletion_time", "num_gpu")
"""Column names an unknown header's columns are compared with, for a nearest name."""


def _open_text(path: Path) -> io.StringIO:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # (its line, not a byte offset nobody can find)
        line = raw[: exc.start].count(b"\n") + 1
        raise TraceError(f"{path}:{line}: not UTF-8: {exc.reason}") from exc
    if "\r" in text and "\n" not in text:  # (old Mac line ends: the csv module reads none of its rows)
        text = text.replace("\r", "\n")
    return io.StringIO(text)


def detect_format(header: Iterable[str]) -> TraceFormat:
    """`alibaba-v2023` when the header has the pod-list columns, `alibaba-spot-v2026` the spot job
    list's, `csv` when it has submit/runtime."""
    cols = {c.strip() for c in header}
    if {"creation_time", "deletion_time", "scheduled_time", "num_gpu"} <= cols:
        return "alibaba-v2023"
    if is_spot_header(cols):
        return "alibaba-spot-v2026"
    if {"submit_time", "runtime"} <= cols:
        return "csv"
    # A misspelt required column is the likeliest cause: name the column it is nearest.
    hints = ((c, did_you_mean(c, KNOWN)) for c in sorted(cols - set(KNOWN)))
    near = "".join(f"{c}: unknown column{hint}; " for c, hint in hints if hint)
    raise TraceError(
        f"unknown trace header {sorted(cols)}: {near}expected the Alibaba GPU v2023 pod list "
        "(creation_time, scheduled_time, deletion_time, num_gpu, ...), the Alibaba v2026 spot "
        "job list (submit_time, duration, gpu_request, worker_num, job_type, ...) or a CSV with "
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


def _alibaba(rows: Iterator[Row], info: TraceInfo, max_runtime_s: float | None) -> list[TraceJob]:
    jobs: list[TraceJob] = []
    checked = RowCheck(COLUMNS["alibaba-v2023"])
    for line, row in rows:
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
    # (seconds from the trace's start or Unix epoch seconds, as the other readers')
    created, scheduled = column(row, "creation_time", moment), column(row, "scheduled_time", moment)
    deleted = column(row, "deletion_time", moment)
    if scheduled < created:
        raise ValueError(f"scheduled_time: before creation_time ({created:g})")
    if deleted < scheduled:
        raise ValueError(f"deletion_time: before scheduled_time ({scheduled:g})")
    num_gpu, milli = int(column(row, "num_gpu", whole)), column(row, "gpu_milli", number, 0)
    if num_gpu < 0:
        raise ValueError("num_gpu: must be >= 0")
    if not 0 <= milli <= 1000:
        raise ValueError("gpu_milli: must be between 0 and 1000 (thousandths of one GPU)")
    count = num_gpu if num_gpu > 0 else (1 if milli > 0 else 0)
    return TraceJob(
        name=(row.get("name") or f"pod-{line - 1}").strip(),
        submit_s=created,
        runtime_s=max(1.0, deleted - scheduled),
        count=count,
        accelerators=map_gpu_spec(_known(row, "gpu_spec", GPU_SPEC_MODELS, "|")) if count else (),
        gpu_spec=True,
        cpus=max(0.1, column(row, "cpu_milli", non_negative) / 1000),
        memory_gb=max(0.1, column(row, "memory_mib", non_negative) / 1024),
        priority=QOS_PRIORITY.get(_known(row, "qos", QOS_PRIORITY), "normal"),
        line=line,
    )


def _known(row: Mapping[str, str | None], name: str, known: Mapping[str, object], sep: str = "") -> str:
    """The column's text where every value (`sep`-separated) is one Alibaba writes; ValueError
    naming the nearest otherwise (an unknown model read as "any accelerator", an unknown `qos`
    as normal priority, said nothing)."""
    text = (row.get(name) or "").strip()
    for value in text.split(sep) if sep else [text]:
        if value.strip() and value.strip() not in known:
            hint = did_you_mean(value.strip(), known)
            raise ValueError(f"{name}: unknown {value.strip()!r}{hint}; one of {', '.join(known)}")
    return text


def _plain(rows: Iterator[Row], info: TraceInfo, max_runtime_s: float | None) -> list[TraceJob]:
    jobs: list[TraceJob] = []
    checked = RowCheck(COLUMNS["csv"])
    for line, row in rows:
        info.rows += 1
        try:
            runtime = column(row, "runtime", seconds)
            if runtime == 0:  # (a fraction of a second runs as 1 s; nothing at all is no job)
                raise ValueError("runtime: must be > 0 (a job runs at least 1 s)")
            runtime = max(1.0, runtime)
            if max_runtime_s is not None and runtime > max_runtime_s:
                info.skip("run time above the scenario's max_runtime")
                continue
            accel = tuple(a.strip() for a in (row.get("accelerator") or "").split("|") if a.strip())
            count = int(column(row, "count", whole, 1 if accel else 0))
            if accel and count == 0:  # (read as CPU-only, the accelerator it names was dropped unsaid)
                raise ValueError(f"count: 0 with accelerator {'|'.join(accel)} (a CPU-only job names none)")
            wait = (row.get("max_wait") or "").strip()
            job = TraceJob(
                name=(row.get("name") or f"job-{line - 1}").strip(),
                submit_s=column(row, "submit_time", moment),
                runtime_s=runtime,
                count=count,
                accelerators=accel,
                cpus=column(row, "cpus", number, 1),
                memory_gb=column(row, "memory_gb", number, 1),
                tenant=(row.get("tenant") or "").strip() or None,
                max_wait_s=column(row, "max_wait", seconds) if wait else None,
                residency=(row.get("residency") or "any").strip() or "any",
                priority=(row.get("priority") or "normal").strip() or "normal",
                nodes=int(column(row, "nodes", whole, 1)),
                group=(row.get("group") or "").strip() or None,
                line=line,
            )
        except ValueError as exc:
            raise TraceError(f"{info.path}:{line}: {exc}") from exc
        if (why := checked.problem(job)) is not None:
            raise TraceError(f"{info.path}:{line}: {why}")
        jobs.append(job)
    return jobs


def _whole_rows(
    reader: csv.DictReader[str], path: Path, width: int, short_ok: bool, cut_at: int | None = None
) -> Iterator[Row]:
    """The rows, refusing one with more cells than the header, and with fewer unless `short_ok`
    (a cut or shifted pod-list row would read its missing cells as empty: a pod "never
    scheduled", say; a hand-written plain CSV row may stop before its optional columns) and
    it is not on line `cut_at`, the last, with no newline after it (a file cut short)."""
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
        if cells < width and reader.line_num == cut_at:
            said = "and the file ends there with no newline (cut short?)"
            raise TraceError(f"{path}:{cut_at}: {cells} cells, the header has {width}, {said}")
        yield reader.line_num, row  # (its own line: blank lines are skipped, not counted out)


def read_trace(
    path: Path, fmt: TraceFormat | None = None, *, max_runtime_s: float | None = None
) -> tuple[list[TraceJob], TraceInfo]:
    """Read a trace (format from the header unless given), sorted by submit time."""
    try:
        text = _open_text(path)
        whole = text.getvalue()
        # The last line's number when no newline ends it: a short row there is a file cut short.
        cut_at = None if whole.endswith(("\n", "\r")) else whole.count("\n") + 1
        reader = csv.DictReader(text)
        # Columns are matched by name, so `submit_time, runtime` reads as written.
        header = reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:  # (EOFError: a cut .gz)
        raise TraceError(f"{path}: cannot read: {exc}") from exc
    # A first column with no name over a known list's columns is the index pandas writes.
    index = header[:1] == [""] and len(header) > 1 and _known_list(header[1:])
    if (blank := [i for i, c in enumerate(header, start=1) if not c][index:]) and len(header) > 1:
        raise TraceError(f"{path}:1: column {blank[0]} of the header has no name")
    if twice := sorted({c for c in header if header.count(c) > 1}):
        raise TraceError(f"{path}:1: column {twice[0]} appears twice in the header")
    if not header:  # (nothing to tell a format from: an empty file, or blank lines only)
        raise TraceError(f"{path}:1: empty file: no header row")
    try:
        found = detect_format(header)
    except TraceError as exc:
        raise TraceError(f"{path}:1: {exc}") from exc
    if fmt is not None and fmt != found:
        raise TraceError(f"{path}: --trace-format {fmt} given but the header is {found}")
    known = {"csv": (PLAIN_COLUMNS, "a plain CSV's"), "alibaba-v2023": (POD_COLUMNS, "the v2023 pod list's")}
    if found in known and (unknown := [c for c in header if c and c not in known[found][0]]):
        # A misspelt column would be read as absent (an accelerator job as CPU-only, a pod's
        # `gpu_specs` as any accelerator), silently.
        columns, whose = known[found]
        why = "; ".join(f"{c}: unknown column{did_you_mean(c, columns)}" for c in unknown)
        raise TraceError(f"{path}:1: {why} ({whose} columns: {', '.join(columns)})")
    if found == "alibaba-spot-v2026" and (typo := misspelt(header)):
        raise TraceError(f"{path}:1: {typo}")
    info = TraceInfo(path=str(path), format=found)
    try:
        rows = _whole_rows(reader, path, len(header), short_ok=found == "csv", cut_at=cut_at)
        read = {"alibaba-v2023": _alibaba, "alibaba-spot-v2026": spot_jobs, "csv": _plain}[found]
        jobs = read(rows, info, max_runtime_s)
    except csv.Error as exc:
        raise TraceError(f"{path}:{reader.line_num}: {exc}") from exc
    # A stable sort: rows at one instant keep the file's order (by name, job-10 came before job-2).
    jobs.sort(key=lambda j: j.submit_s)
    check_span(jobs, str(path), "creation_time" if found == "alibaba-v2023" else "submit_time")
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
                j.nodes,
                j.group or "",
            ]
        )


def _known_list(header: list[str]) -> bool:
    try:
        return detect_format(header) != "csv"
    except TraceError:
        return False


def _cell(value: float) -> str:
    """A number as it reads back exactly (`%g` kept 6 digits: 11,676,412 s became 1.16764e+07)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)
