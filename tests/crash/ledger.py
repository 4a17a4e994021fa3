"""The ledger the crash tests' job commands write: one line when a run starts, one when it ends.

It is the ground truth of what really ran, independent of anything the broker says.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.brokerproc import JOB_PYTHON

_CODE = r"""
import fcntl, json, os, sys, time
path, name, secs, code = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
if len(sys.argv) > 5:  # a gang's node: its rank names its runs; only the failing rank exits `code`
    name += "-r" + os.environ["RANK"]
    code = code if os.environ["RANK"] == sys.argv[5] else 0
def note(event):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"job": name, "event": event, "attempt": os.environ.get("SZB_ATTEMPT_ID", ""),
                            "pid": os.getpid(), "t": time.time()}) + "\n")
note("start")
time.sleep(secs)
print(name, "finished with", code)
note("end")
sys.exit(code)
"""


def _shared(ledger: Path) -> Path:
    """Where jobs really write `ledger`: local jobs run sandboxed as the job user, who cannot
    reach a test's private tmp folder, so the file lives in a world-writable spot instead."""
    folder = Path(tempfile.gettempdir()) / "szb-test-ledgers"
    if not folder.exists():
        folder.mkdir(exist_ok=True)
        folder.chmod(0o1777)
    path = folder / (hashlib.sha256(str(ledger.resolve()).encode()).hexdigest()[:16] + ".jsonl")
    if not path.exists():
        path.touch()
        os.chmod(path, 0o666)
    return path


def command(ledger: Path, name: str, seconds: float, exit_code: int = 0) -> list[str]:
    """argv of a job that sleeps `seconds`, notes its start and end, and exits with `exit_code`."""
    return [JOB_PYTHON, "-c", _CODE, str(_shared(ledger)), name, f"{seconds:g}", str(exit_code)]


def gang_command(
    ledger: Path, name: str, seconds: float, *, failing_rank: int = -1, exit_code: int = 0
) -> list[str]:
    """argv of a gang's job: each node notes its runs as `name`-r<RANK>; only `failing_rank`
    exits with `exit_code` (the others with 0)."""
    return [*command(ledger, name, seconds, exit_code), str(failing_rank)]


def entries(ledger: Path) -> dict[str, list[dict[str, Any]]]:
    """Per job name, its ledger lines (event, attempt, pid, time) in the order they were written."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ledger = _shared(ledger)
    if not ledger.stat().st_size:
        return out
    for line in ledger.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            out[entry["job"]].append(entry)
    return out


def runs(ledger: Path) -> dict[str, list[str]]:
    """Per job name, its start/end events in the order they happened."""
    return defaultdict(list, {job: [e["event"] for e in lines] for job, lines in entries(ledger).items()})


def started_again_after_end(events: list[str]) -> bool:
    """Was a completed execution followed by another start?"""
    return "end" in events and "start" in events[events.index("end") :]


def overlapping_runs(lines: list[dict[str, Any]]) -> bool:
    """Did two runs of one job overlap (one's end after another's start)? Two at once, which
    `started_again_after_end` misses in ['start', 'start', 'end', 'end'].

    A run is a start and the end of the same process (pid and attempt); a run that never ended
    (its instance was killed) has no end to compare, so it counts for nothing here."""
    starts: dict[tuple[Any, Any], float] = {}
    spans: list[tuple[float, float]] = []
    for line in lines:
        key = (line.get("pid"), line.get("attempt"))
        if line["event"] == "start":
            starts[key] = float(line["t"])
        elif key in starts:
            spans.append((starts.pop(key), float(line["t"])))
    begun = [float(line["t"]) for line in lines if line["event"] == "start"]
    return any(start < other < end for start, end in spans for other in begun)
