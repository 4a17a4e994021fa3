"""What the job commands print: the jobs table, JSON of a job, errors."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.markup import escape
from rich.table import Table

from broker.api import job_pb2
from broker.commands._console import Console
from broker.logs import redact_credentials
from broker.model import JobState
from broker.serde import state_from_proto

STATE_STYLE = {
    JobState.QUEUED: "yellow",
    JobState.PLACING: "cyan",
    JobState.PROVISIONING: "cyan",
    JobState.RUNNING: "blue",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
    JobState.PREEMPTED: "yellow",
}



def fail(message: str) -> int:
    """Print `message` as szb's error (credentials masked: an exception's text may quote a DSN with
    its password) and return the exit code 1."""
    print(f"szb: error: {redact_credentials(message)}", file=sys.stderr)
    return 1



def job_dict(job: job_pb2.Job) -> dict[str, Any]:
    d = MessageToDict(job, preserving_proto_field_name=True)
    d["state"] = state_from_proto(job.state).value
    return d


def _age(job: job_pb2.Job) -> str:
    if not job.HasField("start_time"):
        return "-"
    end = job.end_time.ToDatetime() if job.HasField("end_time") else datetime.now(UTC).replace(tzinfo=None)
    seconds = max(0, int((end - job.start_time.ToDatetime()).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _two_lines(text: str, width: int) -> str:
    """`text` word-wrapped in at most two lines of `width`, the rest cut: a waiting job's reason
    says what it waits for (`expected wait 10 min`) after its kind (`waiting on-prem:`)."""
    if len(text) <= width:
        return text
    lines = textwrap.wrap(text, width) or [text]
    return "\n".join([lines[0], _fit(" ".join(lines[1:]), width)] if len(lines) > 2 else lines)


def _asked(job: job_pb2.Job) -> tuple[str, str]:
    """A job's name and the accelerators it asks for, as a list shows them."""
    if not job.HasField("spec"):  # too large for a list's answer (szb get ID shows it)
        return "(spec too large: szb get)", "?"
    acc = job.spec.resources.accelerators
    return job.spec.name, f"{acc.count}x{'|'.join(acc.any_of) or 'any'}" if acc.count else "-"


def _row(job: job_pb2.Job, *, tenants: bool, wide: bool) -> list[str]:
    """One job's cells, in `print_jobs`' column order, its reason last."""
    placed = f"{job.accelerator_count}x{job.accelerator}" if job.accelerator else ""
    name, wanted = _asked(job)
    row = [job.id, *([job.tenant] if tenants else []), name, state_from_proto(job.state).value,
           job.site or "-", placed or wanted]
    if wide:
        row += [
            job.instance_type or "-",
            str(job.attempts),
            str(job.exit_code) if job.HasField("exit_code") else "-",
            _age(job),
            f"{job.cost_so_far:,.2f} {job.cost_currency}" if job.cost_currency else "-",
        ]
    return [*row, job.pending_reason or job.message]


MIN_REASON = 24
"""Characters of REASON a narrow table keeps for a waiting job (`waiting on-prem: expecte…`)."""

_GIVE_WAY: tuple[tuple[str, int | None], ...] = (
    ("NAME", 12), ("ACCEL", 0), ("SITE", 0), ("SITE", None), ("ACCEL", None), ("NAME", 0),
)
"""What a narrow table gives up, in turn, until REASON has MIN_REASON: (column, the width it may
be cut to, 0 for its header's; None: the column leaves the table, which `--wide` shows whole)."""


def _widths(header: list[str], rows: list[list[str]]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]


def _give_way(header: list[str], rows: list[list[str]], width: int, need: int) -> None:
    """Cut, then drop, the columns of `_GIVE_WAY` (in place) until REASON has `need` of `width`
    (no more than the longest reason): an 80-column operator's list kept `waiti…` beside whole
    tenants, names and sites."""
    need = max(len("REASON"), min(need, max((len(r[-1]) for r in rows), default=0)))
    for col, floor in _GIVE_WAY:
        short = need - (width - sum(w + 3 for w in _widths(header, rows)) - 4)
        if short <= 0:
            return
        if col not in header:
            continue
        at = header.index(col)
        if floor is None:
            del header[at]
            for row in rows:
                del row[at]
            continue
        have = _widths(header, rows)[at]
        cut = max(floor, len(col), have - short)
        for row in rows:
            row[at] = _fit(row[at], cut)


def print_jobs(
    jobs: Iterable[job_pb2.Job],
    console: Console,
    *,
    wide: bool = False,
    whole_reason: bool = False,
    tenant: bool = False,
) -> None:
    """Ids and states are never cut (ids are what users copy); a narrow terminal cuts the reason,
    after other columns gave it MIN_REASON (`_GIVE_WAY`); `wide` shows everything whole,
    which also adds placement, cost and run time. `whole_reason` (one job, `szb get`): a reason
    that was cut also follows the table in full. `tenant`: a TENANT column whoever's jobs these are."""
    jobs = list(jobs)
    # Whose each job is: asked for (`szb get`), every column (`wide`), or a page that spans
    # tenants (an operator's list); a one-tenant page of a narrow list leaves it out.
    tenants = tenant or wide or len({job.tenant for job in jobs}) > 1
    header = ["ID", *(["TENANT"] if tenants else []), "NAME", "STATE", "SITE", "ACCEL"]
    if wide:
        header += ["INSTANCE", "ATTEMPTS", "EXIT", "RAN", "COST"]
    rows = [_row(job, tenants=tenants, wide=wide) for job in jobs]
    states = [state_from_proto(job.state) for job in jobs]
    if not wide:  # (`szb get` prints a cut reason whole below: its columns need not give way)
        _give_way(header, rows, console.width, len("REASON") if whole_reason else MIN_REASON)
    widths = _widths(header, rows)
    # Every column but the reason keeps its full width (3 of border each), the terminal's or not.
    console.width = max(console.width, sum(w + 3 for w in widths) + 4 + len("REASON"))
    room = console.width - sum(w + 3 for w in widths) - 4
    table = Table(show_lines=False)
    for col in header:
        table.add_column(col, no_wrap=True, justify="right" if col in ("ATTEMPTS", "COST") else "left")
    table.add_column("REASON", no_wrap=True)
    for row, state in zip(rows, states, strict=True):
        cells = [escape(c) for c in row[:-1]]
        cells[header.index("STATE")] = f"[{STATE_STYLE[state]}]{state.value}[/]"
        fit = _fit if whole_reason else _two_lines
        reason = row[-1] if wide else fit(row[-1], max(room, len("REASON")))
        table.add_row(*cells, escape(reason))
    console.print(table)
    cut = [row[-1] for row in rows if not wide and len(row[-1]) > max(room, len("REASON"))]
    if whole_reason and cut:  # what `szb get` of a waiting job is asked for: why it waits
        console.print(f"reason: {escape(cut[0])}", soft_wrap=True, highlight=False)


def console_for(wide: bool = False) -> Console:
    """Wide output is never folded to the terminal: lines are as long as their content."""
    return Console(width=100_000) if wide else Console()


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls (but newline and tab), and the bidirectional marks and overrides, which
reorder what follows them on the line (U+202E shows a line's end first: `gpj.exe` as `exe.jpg`)."""


def shown_output(text: str) -> str:
    """A job's output for `szb get`/`watch`: its control characters (but newline and tab) shown as
    `\\xNN` (bidirectional ones as `\\uNNNN`), so a job cannot retitle, clear or rewrite an
    operator's terminal (`szb logs` prints the raw bytes, for a person who asks for them)."""
    text = text.replace("\r\n", "\n")  # (a Windows line end is a line end; a lone \r rewrites one)
    return _CONTROL.sub(lambda m: f"\\x{n:02x}" if (n := ord(m.group())) < 0x100 else f"\\u{n:04x}", text)
