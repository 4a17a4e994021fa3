"""Decoding slurmrestd records: job states, Slurm numbers, exit codes, gres strings, marks.

Pure functions over the JSON slurmrestd returns; the places where API versions differ are
marked "version-specific".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from adapters.base import read_tail
from broker.model import AttemptState, AttemptStatus

LOG_TAIL_BYTES = 4096
MARK_PREFIX = "szb:"
_NO_VAL_32 = 0xFFFFFFFE  # Slurm's NO_VAL; INFINITE is 0xFFFFFFFF; 64-bit variants are larger

# ------------------------------------------------------------------------------------ states

SLURM_STATES: Mapping[str, AttemptState] = {
    "PENDING": AttemptState.PENDING,
    "CONFIGURING": AttemptState.PENDING,  # allocated, nodes booting
    "REQUEUED": AttemptState.PENDING,
    "REQUEUE_FED": AttemptState.PENDING,
    "REQUEUE_HOLD": AttemptState.PENDING,
    "RESV_DEL_HOLD": AttemptState.PENDING,
    "SUSPENDED": AttemptState.PENDING,  # holds its allocation but makes no progress
    "RUNNING": AttemptState.RUNNING,
    "COMPLETING": AttemptState.RUNNING,  # epilog still running; the final state follows
    "RESIZING": AttemptState.RUNNING,
    "SIGNALING": AttemptState.RUNNING,
    "STAGE_OUT": AttemptState.RUNNING,
    "STOPPED": AttemptState.RUNNING,
    "UPDATE_DB": AttemptState.RUNNING,
    "COMPLETED": AttemptState.SUCCEEDED,
    "FAILED": AttemptState.FAILED,
    "TIMEOUT": AttemptState.FAILED,
    "OUT_OF_MEMORY": AttemptState.FAILED,
    "DEADLINE": AttemptState.FAILED,
    "SPECIAL_EXIT": AttemptState.FAILED,
    "CANCELLED": AttemptState.CANCELLED,
    "PREEMPTED": AttemptState.PREEMPTED,
    "NODE_FAIL": AttemptState.LOST,  # the infrastructure failed, not the job
    "BOOT_FAIL": AttemptState.LOST,
    "LAUNCH_FAILED": AttemptState.LOST,
    "REVOKED": AttemptState.LOST,  # federation: the job runs on a sibling cluster
    "POWER_UP_NODE": AttemptState.PENDING,
    "RECONFIG_FAIL": AttemptState.LOST,
}


def job_state_name(job: Mapping[str, Any]) -> str:
    """The base state of a job record (a string in v0.0.38, a list of flags from v0.0.40)."""
    raw = job.get("job_state", job.get("state"))
    if isinstance(raw, list):
        names = [str(x).upper() for x in raw]
        for name in names:
            if name in SLURM_STATES:
                return name
        return names[0] if names else "UNKNOWN"
    if isinstance(raw, Mapping):  # defensive: {"current": [...]} as in slurmdb replies
        return job_state_name({"job_state": raw.get("current")})
    return str(raw or "UNKNOWN").upper()


def slurm_number(value: Any) -> float | None:
    """A Slurm number, plain (v0.0.38) or ``{"set", "infinite", "number"}`` (v0.0.39+).

    None when unset, infinite or NO_VAL.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return None if value >= _NO_VAL_32 else float(value)
    if isinstance(value, Mapping):
        if value.get("infinite") or not value.get("set", True):
            return None
        return slurm_number(value.get("number"))
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        return slurm_number(int(value))
    return None


def decode_exit_code(raw: Any) -> int | None:
    """A shell-style exit code: the wait status of v0.0.38 (signal N -> 128+N) or a v0.0.39+ dict."""
    if isinstance(raw, Mapping):
        status = raw.get("status")
        statuses = {str(s).upper() for s in (status if isinstance(status, list) else [status])}
        signal = raw.get("signal")
        sig = slurm_number(signal.get("id") if isinstance(signal, Mapping) else signal)
        if "SIGNALED" in statuses and sig:
            return 128 + int(sig)
        rc = slurm_number(raw.get("return_code"))
        return int(rc) if rc is not None else None
    n = slurm_number(raw)
    if n is None:
        return None
    status = int(n)
    if status & 0x7F:
        return 128 + (status & 0x7F)
    return (status >> 8) & 0xFF


# ------------------------------------------------------------------------------------ gres

def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: ``gpu:a:2(S:0,1),gpu:b:1`` -> two items."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def parse_gres(text: Any, name: str = "gpu") -> dict[str | None, int]:
    """Counts of one gres by type from a node's ``gres`` / ``gres_used`` or a job's tres string.

    Accepts ``gpu:a800:4``, ``gpu:a800:4(S:0-1)``, ``gpu:a800:0(IDX:N/A)``, ``gpu:4`` (type
    None), ``gres:gpu:a800:4``, ``gres/gpu:a800=4`` and comma lists mixing other resources.
    """
    counts: dict[str | None, int] = {}
    if not isinstance(text, str):
        return counts
    for item in _split_top_level(text):
        item = re.sub(r"\([^()]*\)$", "", item)  # drop "(S:0-1)" / "(IDX:0-3)", keep "(null)"
        for prefix in ("gres:", "gres/"):
            if item.startswith(prefix):
                item = item[len(prefix):]
        parts = re.split(r"[:=]", item)
        if parts[0] != name or len(parts) < 2:
            continue
        if len(parts) == 2:
            gtype, count = None, parts[1]
        else:
            gtype, count = parts[1], parts[2]
        if gtype in ("", "(null)", "null"):
            gtype = None
        if not count.isdigit():
            continue
        counts[gtype] = counts.get(gtype, 0) + int(count)
    return counts


def job_gpus(job: Mapping[str, Any]) -> int:
    """Accelerators a job asks for (any type): per job, else per node x nodes, else per task."""
    per_job = sum(parse_gres(job.get("tres_per_job")).values())
    if per_job:
        return per_job
    per_node = sum(parse_gres(job.get("tres_per_node")).values())
    if per_node:
        nodes = slurm_number(job.get("node_count")) or 1
        return per_node * max(1, int(nodes))
    per_task = sum(parse_gres(job.get("tres_per_task")).values())
    if per_task:
        tasks = slurm_number(job.get("tasks")) or 1
        return per_task * max(1, int(tasks))
    return 0


def array_tasks(job: Mapping[str, Any]) -> int:
    """Tasks a job record stands for: a job array's pending tasks share one record whose
    ``array_task_string`` lists them (``0-39``, ``1,3,8-20:4``, ``0-99%4``); 1 for any other job."""
    text = str(job.get("array_task_string") or "").partition("%")[0]  # "%4": how many run at once
    count = 0
    for part in filter(None, text.split(",")):
        lo, _, rest = part.partition("-")
        hi, _, step = rest.partition(":")
        if lo.isdigit() and hi.isdigit():
            count += len(range(int(lo), int(hi) + 1, int(step) if step.isdigit() and int(step) else 1))
        elif lo.isdigit():
            count += 1
    return max(1, count)


# ------------------------------------------------------------------------------------ marks

LIMIT_MARK = "limit"
"""The mark holding the time limit (minutes) the broker submitted the job with."""


def encode_marks(marks: Mapping[str, str]) -> str:
    """``szb:key=value;…`` with values percent-encoded (they may hold any character)."""
    return ";".join(f"{MARK_PREFIX}{k}={quote(v, safe='')}" for k, v in marks.items())


def decode_marks(comment: Any) -> dict[str, str]:
    """The broker's marks from a job comment; {} for comments the broker did not write."""
    marks: dict[str, str] = {}
    if not isinstance(comment, str):
        return marks
    for part in comment.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.startswith(MARK_PREFIX):
            marks[key[len(MARK_PREFIX):]] = unquote(value)
    return marks



# ------------------------------------------------------------------------------------ nodes and output

def node_partitions(node: Mapping[str, Any]) -> list[str]:
    parts = node.get("partitions")
    if isinstance(parts, list):
        return [str(p) for p in parts]
    if isinstance(parts, str):
        return [p for p in parts.split(",") if p]
    return []


_UNUSABLE_NODE = {"DOWN", "DRAIN", "DRAINED", "DRAINING", "NOT_RESPONDING", "FUTURE", "FAIL",
                  "FAILING", "ERROR", "UNKNOWN", "POWERED_DOWN", "POWER_DOWN", "POWERING_DOWN",
                  "INVALID_REG", "MAINTENANCE", "REBOOT_REQUESTED", "REBOOT_ISSUED",
                  # The broker's jobs name no reservation, so a reserved node never runs them.
                  "RESERVED"}


def job_nodes(job: Mapping[str, Any]) -> list[str]:
    """The node names of a job's hostlist (``nodes``: ``a800``, ``gpu[01-03,07],cpu1``)."""
    raw = job.get("nodes")
    if isinstance(raw, list):
        return [str(n) for n in raw]
    names: list[str] = []
    for prefix, ranges in re.findall(r"([^,\[]+)(?:\[([^\]]*)\])?,?", str(raw or "")):
        if not ranges:
            names.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            span = range(int(lo), int(hi) + 1) if hi and lo.isdigit() and hi.isdigit() else None
            names += [f"{prefix}{i:0{width}d}" for i in span] if span else [f"{prefix}{part}"]
    return names


def node_usable(node: Mapping[str, Any]) -> bool:
    """Can new jobs start on this node (not down, drained, unresponsive …)?"""
    raw = node.get("state")
    words = {str(x).upper() for x in raw} if isinstance(raw, list) else {str(raw or "").upper()}
    words |= {str(x).upper() for x in node.get("state_flags") or []}
    return not (words & _UNUSABLE_NODE)


def output_path(job: Mapping[str, Any]) -> Path | None:
    """The job's stdout file, with the filename patterns this adapter can resolve expanded."""
    raw = job.get("standard_output")
    if not isinstance(raw, str) or not raw:
        return None
    subst = {"j": str(job.get("job_id", "")), "A": str(job.get("array_job_id") or job.get("job_id", "")),
             "x": str(job.get("name", "")), "u": str(job.get("user_name", "")), "%": "%"}
    path = re.sub(r"%(\w|%)", lambda m: subst.get(m.group(1), m.group(0)), raw)
    if not path.startswith("/"):
        path = os.path.join(str(job.get("current_working_directory") or "/"), path)
    return Path(path)


def log_tail(path: Path | None, owner: int | None = None) -> str:
    """The output's tail; "" without one (or, given `owner`, without one of that uid's)."""
    return "" if path is None else read_tail(path, LOG_TAIL_BYTES, owner)


def job_status(
    job: Mapping[str, Any], launch_hint: str = "", owner: int | None = None, output: Path | None = None
) -> AttemptStatus:
    """An attempt's status from its slurmrestd job record: state, reason, exit code, output.

    `launch_hint`: what to check when Slurm could not launch the job at all (JobLaunchFailure);
    `owner`: the uid whose output files alone are read (`adapters.slurm._owned`); `output`: the
    job's own output file, else (empty or none) Slurm's StdOut is read.
    """
    name = job_state_name(job)
    state = SLURM_STATES.get(name)
    reason = str(job.get("state_reason") or "")
    tail = log_tail(output, owner) or log_tail(output_path(job), owner)
    if state is None:
        return AttemptStatus(state=AttemptState.PENDING, log_tail=tail,
                             message=f"unknown Slurm state {name}")
    message = name if reason in ("", "None") else f"{name} ({reason})"
    if state is AttemptState.PENDING:
        start = slurm_number(job.get("start_time"))
        if start and name == "PENDING" and not reason.startswith("JobHeld"):
            message += f", expected start {datetime.fromtimestamp(start, UTC).isoformat()}"
        return AttemptStatus(state=state, log_tail=tail, message=message, cause=held_cause(name, reason))
    # A job cancelled while it pended gets a start time too (its end), but never nodes.
    start = slurm_number(job.get("start_time")) if job.get("nodes") or job.get("batch_host") else None
    started = datetime.fromtimestamp(start, UTC) if start else None
    if not state.terminal:
        return AttemptStatus(state=state, log_tail=tail, message=message, started_at=started)
    code = decode_exit_code(job.get("exit_code"))
    if started is None and state is AttemptState.CANCELLED:
        code = None  # cancelled before it ran: Slurm's 0 is no exit code of the job's
    if state is AttemptState.SUCCEEDED and code is None:
        code = 0
    cause = stop_cause(name, job)
    if name == "FAILED" and reason == "JobLaunchFailure":
        # slurmd never ran the script (it could not open the output file, say): the signal in
        # exit_code is slurmd's own, not an exit code of the job's.
        code, started = None, None
        cause = "JobLaunchFailure: Slurm could not start it on its node"
        cause += f"; {launch_hint}" if launch_hint else ""
    return AttemptStatus(state=state, exit_code=code, log_tail=tail, message=message, cause=cause,
                         started_at=started)


BLOCKED_BY = (
    ("PartitionDown", "its partition is down: it starts once an administrator brings it up"),
    ("PartitionInactive", "its partition is inactive: it starts once an administrator brings it up"),
    ("NodeDown", "a node it needs is down"),
    ("ReqNodeNotAvail", "the nodes it could use are unavailable (down, drained or reserved)"),
    ("InvalidAccount", "Slurm does not accept its account (tenants[].batch.account): it never starts so"),
    ("InvalidQOS", "Slurm does not accept its QOS (batch.qos, qos_by_priority): it never starts so"),
    ("QOS", "a limit of its QOS: it starts when the limit allows (never if the job alone is over it)"),
    ("Assoc", "a limit of its Slurm account: it starts when the limit allows (never if the job is over it)"),
    ("Reservation", "it waits for a reservation"),
    ("Licenses", "it waits for licenses"),
)
"""Pending reasons (by prefix) under which Slurm holds a job back for something other than its
turn (Priority) or free resources (Resources), and what each means for the job."""


NOT_WAITING_FOR_CAPACITY = (
    "JobHeld",  # JobHeldUser, JobHeldAdmin: not until released
    "BeginTime", "Dependency",  # deferred (--begin), or after other jobs (DependencyNeverSatisfied too)
    "PartitionDown", "PartitionInactive", "PartitionTimeLimit", "PartitionNodeLimit", "PartitionConfig",
    "NodeDown", "ReqNodeNotAvail", "BadConstraints", "InvalidAccount", "InvalidQOS",
    "QOS", "Assoc", "Reservation", "Licenses",  # a limit or resource of its own, not the units
)
"""Pending reasons (by prefix) of a job Slurm does not start when units free up: it is not in
line for them, and Slurm schedules the jobs behind it past it. Resources and Priority (or None,
not yet evaluated) are the reasons of a job waiting for capacity or its turn."""


def waits_for_capacity(job: Mapping[str, Any]) -> bool:
    """Is this pending job in line for the partition's units (not held, deferred or blocked)?"""
    if job_state_name(job) in ("REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED"):
        return False
    return not str(job.get("state_reason") or "").startswith(NOT_WAITING_FOR_CAPACITY)


def held_cause(name: str, reason: str) -> str:
    """Why a job Slurm lists as pending will not start (or go on) by itself ("" when it will)."""
    said = "" if reason in ("", "None") else reason
    if name == "SUSPENDED":
        return f"suspended in Slurm ({said or name}): it makes no progress until resumed (scontrol resume)"
    if reason.startswith("JobHeld") or name in ("REQUEUE_HOLD", "RESV_DEL_HOLD"):
        who = {"JobHeldAdmin": "an administrator", "JobHeldUser": "its user"}.get(reason, "Slurm")
        return f"held in Slurm by {who} ({said or name}): it does not start until released (scontrol release)"
    if name == "PENDING":
        why = next((why for prefix, why in BLOCKED_BY if reason.startswith(prefix)), "")
        return f"held back in Slurm ({reason}): {why}" if why else ""
    return ""


def stop_cause(name: str, job: Mapping[str, Any]) -> str:
    """Why Slurm stopped a job that did not end by itself ("" when it did)."""
    if name == "TIMEOUT":
        limit = slurm_number(job.get("time_limit"))
        of = f" of {limit:g} min" if limit else ""
        set_at = decode_marks(job.get("comment")).get(LIMIT_MARK)
        if limit and set_at and set_at != f"{limit:g}":  # (changed in Slurm after the submit)
            return (f"TIMEOUT: Slurm stopped it at its time limit{of}, changed in Slurm since the broker "
                    f"set {set_at} min")
        return (f"TIMEOUT: Slurm stopped it at its time limit{of} (the job's runtime_estimate "
                "x the site's time_limit_factor)")
    if name == "OUT_OF_MEMORY":
        return "OUT_OF_MEMORY: Slurm stopped it for using more memory than it asked for (resources.memory_gb)"
    if name == "DEADLINE":
        return "DEADLINE: Slurm stopped it at its deadline"
    return ""
