"""Alibaba's spot-GPU job list (`cluster-trace-v2026-spot-gpu/job_info_df.csv`) to `TraceJob`s.

Duan et al., "GFS: A Preemptive Scheduling Framework for GPU Clusters with Predictive Spot
Management", ASPLOS '26. One row per job: `job_name`, `organization`, `gpu_model`,
`cpu_request` and `gpu_request` (per worker), `worker_num`, `submit_time` (s from the first
job), `duration` (s), `job_type` (`HP`: high priority, strict SLO; `Spot`: opportunistic).

Per job: arrival = `submit_time`, run time = `duration`; a job of several workers is a gang of
`worker_num` nodes, each with `gpu_request` GPUs (a fraction of one GPU takes a whole one: the
broker does not share devices) and `cpu_request` CPUs; `gpu_model` names the model the job
ran on in Alibaba's pool (the catalog's names for its A100/A800 80 GB; `GPU-series-N`, models
Alibaba does not disclose, accept any accelerator), dropped under a scenario's `gpu_spec:
ignore` as the v2023 pod list's `gpu_spec` is; `HP` runs at normal priority, `Spot` at low; an
`organization` is a group whose jobs all get one tenant drawn from the scenario's weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from broker.sim.trace_rows import (
    Row,
    RowCheck,
    TraceError,
    TraceInfo,
    TraceJob,
    column,
    moment,
    non_negative,
    number,
    seconds,
    whole,
)
from broker.validation import did_you_mean

REQUIRED = ("submit_time", "duration", "gpu_request", "worker_num", "job_type")
"""The columns that tell this list from the others (`job_name`, `organization`, `gpu_model`
and `cpu_request` may be missing)."""

SPOT_MODELS: dict[str, str] = {
    "A100-SXM4-80GB": "A100-80GB",
    "A800-SXM4-80GB": "A800",
}
"""The list's model names the catalog writes otherwise; the rest (`A10`, `H800`) are catalog names."""

UNDISCLOSED = re.compile(r"GPU-series-\d+", re.IGNORECASE)
"""Models Alibaba does not name: a job on one may run on any accelerator."""

JOB_TYPE_PRIORITY = {"hp": "normal", "spot": "low"}
"""`job_type` (any case) -> job priority."""

MAX_WORKERS = 256
"""A job spec's most nodes: a job of more workers is skipped (and counted), not refused."""

SPOT_COLUMNS = {
    "resources.accelerators.count": "gpu_request",
    "resources.accelerators.any_of": "gpu_model",
    "resources.cpus": "cpu_request",
    "resources.nodes": "worker_num",
    "priority": "job_type",
}
"""Spec field -> the column it comes from, to name in an error."""


COLUMNS = ("job_name", "organization", "gpu_model", "cpu_request", *REQUIRED)
"""Every column the list has."""


def misspelt(columns: Iterable[str]) -> str | None:
    """`column: unknown column (did you mean ...)` for a column that looks like a misspelt one of
    the list's (an optional column misspelt would read as absent: every job on any accelerator,
    each drawing its own tenant); other extra columns are left alone."""
    for c in columns:
        if c and c not in COLUMNS and (hint := did_you_mean(c, COLUMNS)):
            return f"{c}: unknown column{hint}"
    return None


def is_spot_header(columns: Iterable[str]) -> bool:
    """Whether a header is this list's (by column names: their order may differ)."""
    return set(REQUIRED) <= set(columns)


def spot_jobs(rows: Iterator[Row], info: TraceInfo, max_runtime_s: float | None) -> list[TraceJob]:
    """The list's jobs; a row that does not parse is refused at its line, naming the column."""
    jobs: list[TraceJob] = []
    checked = RowCheck(SPOT_COLUMNS)
    for line, row in rows:
        info.rows += 1
        try:
            job = _job(row, line)
        except ValueError as exc:
            raise TraceError(f"{info.path}:{line}: {exc}") from exc
        if job.nodes > MAX_WORKERS:
            info.skip(f"more than {MAX_WORKERS} workers (a job's most nodes)")
            continue
        if max_runtime_s is not None and job.runtime_s > max_runtime_s:
            info.skip("run time above the scenario's max_runtime")
            continue
        if (why := checked.problem(job)) is not None:
            raise TraceError(f"{info.path}:{line}: {why}")
        jobs.append(job)
    return jobs


def _job(row: dict[str, str], line: int) -> TraceJob:
    gpus = column(row, "gpu_request", number)
    if gpus < 0:
        raise ValueError("gpu_request: must be >= 0")
    if gpus > 1 and gpus != int(gpus):
        raise ValueError("gpu_request: a share of one GPU, or whole GPUs")
    count = 1 if 0 < gpus < 1 else int(gpus)
    workers = int(column(row, "worker_num", whole))
    if workers < 1:
        raise ValueError("worker_num: must be >= 1")
    cpus = column(row, "cpu_request", non_negative, 1)
    kind, model = (row.get("job_type") or "").strip(), (row.get("gpu_model") or "").strip()
    if kind.lower() not in JOB_TYPE_PRIORITY:
        raise ValueError(f"job_type: {kind!r} is neither HP nor Spot" if kind else "job_type: required")
    return TraceJob(
        name=(row.get("job_name") or "").strip() or f"job-{line - 1}",
        submit_s=column(row, "submit_time", moment),
        runtime_s=max(1.0, column(row, "duration", seconds)),
        count=count,
        accelerators=_model(model) if count else (),
        gpu_spec=True,
        cpus=max(0.1, cpus),
        priority=JOB_TYPE_PRIORITY[kind.lower()],
        nodes=workers,
        group=(row.get("organization") or "").strip() or None,
        line=line,
        undisclosed=model if count and UNDISCLOSED.fullmatch(model) else "",
    )


def _model(text: str) -> tuple[str, ...]:
    model = text.strip()
    if not model or UNDISCLOSED.fullmatch(model):
        return ()
    return (SPOT_MODELS.get(model, model),)
