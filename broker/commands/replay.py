"""`szb policy replay`: the broker's own recorded history under the active and a candidate policy."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.commands._args import BEIJING, parse_since
from broker.errors import BrokerError
from broker.policy import Policy, PolicyError, load_policy, load_policy_text


def register(cmds: Any) -> None:
    p = cmds.add_parser(
        "replay", help="replay the store's recorded jobs under the active policy and a candidate (diff)"
    )
    p.add_argument("--policy", type=Path, required=True, help="the candidate policy file")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="compare against this file instead of the policy the store recorded as active",
    )
    p.add_argument(
        "--since",
        default=None,
        help="only jobs submitted since: an age (7d, 2h) or a time (2026-12-01, 2026-12-01T08:00+08:00; "
        "Beijing time unless it gives an offset)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--store", metavar="DSN", help="a PostgreSQL store (postgresql://...)")
    src.add_argument("--data-dir", type=Path, default=None, help="the broker's data dir (default .szb)")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument("--report", type=Path, default=None, help="write summary.json and PNG plots here")
    p.set_defaults(handler=cmd_replay)


def _fail(message: str) -> int:
    print(f"szb policy replay: {message}", file=sys.stderr)
    return 1


def _open_store(args: argparse.Namespace, since: datetime | None, scratch: ExitStack) -> Any:
    from broker.store.sqlite import SqliteStore

    # Read a snapshot, never the store itself: opening a store brings an older schema up to
    # date (a write), and a broker still running keeps writing between the pages read.
    copy = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="szb-replay-"))) / "broker.db"
    if args.store:
        from broker.store.snapshot import copy_postgres

        copy_postgres(args.store, copy, since)  # (read-only: the server refuses any write)
        return SqliteStore(copy)
    from broker.config import DEFAULT_DATA_DIR
    from broker.store.snapshot import copy_sqlite

    db = (args.data_dir or DEFAULT_DATA_DIR) / "broker.db"
    try:
        copy_sqlite(db, copy)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} (give --data-dir DIR or --store DSN)") from exc
    return SqliteStore(copy)


def _active_policy(store: Any) -> tuple[Policy, str, str]:
    """The newest policy version the broker loaded, from the audit trail, with the files it referred
    to as stored with it ("store"); a version stored before those were reads them from disk as they are
    now ("disk, none stored"): they may have changed since."""
    for version in store.policy_versions(limit=200):
        if version.result in ("loaded", "unchanged") and version.content:
            # (Beijing time, as the title's `since` is: a naive time is the store's UTC)
            at = version.time if version.time.tzinfo else version.time.replace(tzinfo=UTC)
            stored = at.astimezone(UTC) + BEIJING
            when = f"stored {stored:%Y-%m-%d %H:%M} Beijing time"
            where = f"{version.source} (sha256 {version.hash[:12]}, {when})"
            stored = dict(version.files) if version.files else None
            try:
                policy = load_policy_text(version.content, version.source or "stored policy", stored)
            except PolicyError as exc:
                raise StoredPolicyError(where, exc) from exc
            return policy, where, "disk, none stored" if stored is None else "store"
    raise LookupError("the store records no loaded policy version (give --baseline FILE)")


class StoredPolicyError(BrokerError):
    """The policy the store records as active no longer loads (its files moved, or newer rules)."""

    def __init__(self, where: str, error: PolicyError) -> None:
        super().__init__(where)
        self.where, self.error = where, error


def _arguments(args: argparse.Namespace) -> tuple[datetime | None, Policy] | int:
    """(since, the candidate policy) from the flags, or the exit code after a clear error."""
    from broker.sim.report import ensure_report_dir

    since: datetime | None = None
    try:
        _check_dsn(args.store)
        if args.since is not None:  # (an empty --since "" is a mistake, not "everything")
            since = parse_since(args.since)
        if args.report is not None:  # before reading anything
            ensure_report_dir(args.report)
        return since, load_policy(args.policy)
    except argparse.ArgumentTypeError as exc:
        return _fail(f"--since: {exc}")
    except ValueError as exc:
        return _fail(str(exc))
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except OSError as exc:
        return _fail(f"--policy: {exc}")


def _check_dsn(dsn: str | None) -> None:
    """ValueError for a `--store` that is neither a PostgreSQL URL nor key=value pairs (a path or a
    `sqlite://` URL, most likely): the driver's own words for it (`missing "=" ... in connection
    info string`) name no flag."""
    if dsn is None:
        return
    scheme = dsn.partition("://")[0].lower() if "://" in dsn else None
    if ("://" not in dsn and "=" not in dsn) or scheme not in (None, "postgresql", "postgres"):
        raise ValueError(
            f"--store {dsn}: not a PostgreSQL DSN (postgresql://USER@HOST:5432/DB, or key=value pairs "
            "such as host=HOST dbname=DB); a SQLite store is read with --data-dir DIR"
        )


def cmd_replay(args: argparse.Namespace) -> int:
    from broker.sim.admission import not_modelled
    from broker.sim.replay import diff, read_history, replay

    given = _arguments(args)
    if isinstance(given, int):
        return given
    since, candidate = given
    with ExitStack() as scratch:
        try:
            store = _open_store(args, since, scratch)
        except Exception as exc:  # a missing file, a refused connection: say which store
            return _fail(str(exc))
        try:
            if args.baseline is not None:
                current, source, files_from = load_policy(args.baseline), str(args.baseline), "disk"
            else:
                current, source, files_from = _active_policy(store)
            history = read_history(store, since)
        except PolicyError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 1
        except StoredPolicyError as exc:
            _fail(f"the active policy the store records, {exc.where}, no longer loads:")
            for problem in exc.error.problems:
                print(f"  {problem}", file=sys.stderr)
            return _fail("compare against a policy file instead: --baseline FILE")
        except (LookupError, OSError) as exc:
            return _fail(str(exc))
        finally:
            store.close()
    if candidate.currency != current.currency:  # (each run's costs are in its policy's currency)
        mixed = f"the candidate prices in {candidate.currency}, {source} in {current.currency}"
        return _fail(f"{mixed}: costs would not compare")
    if not history.jobs:
        left_out = "".join(f"; {n} {why}" for why, n in history.skipped.items())
        # (in Beijing time, as spend and audit say times, whatever offset --since was given with)
        when = f" since {since.astimezone(UTC) + BEIJING:%Y-%m-%d %H:%M} Beijing time" if since else ""
        return _fail("no recorded jobs" + when + left_out)
    result = diff(history, replay(current, history), replay(candidate, history))
    result["current_policy"], result["currency"] = source, current.currency
    result["current_files_from"] = files_from  # (the files it refers to: as stored with it, or on disk now)
    result["not_modelled"] = not_modelled(current, candidate)  # limits that differ, not replayed
    result["candidate_policy"] = str(args.policy)
    # The window read, in UTC (None: the whole history), so a saved JSON says what it covers.
    result["since"] = since.astimezone(UTC).isoformat() if since else None
    result["actual_runtimes"] = len(history.runtimes_s)
    if args.report is not None:
        from broker.sim.replay_report import write_replay_report

        result["report_files"] = [str(p) for p in write_replay_report(args.report, result)]
    if args.output == "json":
        print(json.dumps(result, indent=2, default=str))
    else:
        _table(result)
    return 0


ROWS = {
    "cost": "total cost ({currency})",
    "p50_wait_s": "wait p50 (s)",
    "p95_wait_s": "wait p95 (s)",
    "bursts": "jobs burst to a cloud",
    "rejected": "refused",
    "never_started": "never started",
    "late_jobs": "late (over max_wait)",
    "late_finish_jobs": "finished late (after max_wait + runtime)",
}
"""Key of the run's totals -> its row in the table (the report plots one panel each)."""


def _table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from broker.commands._console import Console
    from broker.sim.replay_report import figure

    console = Console() if sys.stdout.isatty() else Console(width=200)  # (as simulate: no wrapping in a pipe)
    since = result.get("since")
    start = datetime.fromisoformat(since).astimezone(UTC) + BEIJING if since else None
    window = f" since {start:%Y-%m-%d %H:%M} Beijing time" if start else ""
    door = result.get("refused_at_submit") or 0
    refused = f", {door} of them refused at submit" if door else ""
    t = Table(title=f"Replay of {result['jobs']} recorded jobs{window}{refused}")
    for col in ("", "current", "candidate", "change"):
        t.add_column(col, justify="right" if col else "left")
    for key, label in ROWS.items():
        label = label.format(currency=result["currency"])
        a, b, d = result["current"].get(key), result["candidate"].get(key), result["delta"].get(key)
        t.add_row(label, figure(a), figure(b), "" if d in (None, 0) else figure(d, sign=True))
    console.print(t)
    more = (result["candidate"].get("rejected") or 0) - (result["current"].get("rejected") or 0)
    if more:  # (a cost that fell because jobs are refused is no saving)
        who, n = ("candidate", more) if more > 0 else ("current policy", -more)
        console.print(f"cost counts only the jobs a policy runs: the {who} refuses {n} more")
    console.print(f"current: {result['current_policy']}   candidate: {result['candidate_policy']}")
    if result.get("current_files_from") == "disk, none stored":
        console.print("current: this stored version kept no copy of the files it refers to (stored before "
                      "they were); they were read from disk as they are now")
    if result["capacity_errors"]:
        errors = ", ".join(f"{site} {n}" for site, n in result["capacity_errors"].items())
        console.print(f"recorded capacity errors, replayed as stock-outs: {errors}")
    for why, n in result.get("skipped", {}).items():
        console.print(f"left out: {n} job(s) {why} (nothing of them ran)")
    if result.get("not_modelled"):
        names = ", ".join(result["not_modelled"])
        console.print(f"not modelled: {names} (the candidate changes them; the replay does not apply them)")
    n = len(result.get("recorded_prices", {}))
    console.print(f"prices: {n} offer(s) at the price recorded when launched, the rest at catalog prices")
    for title, rows, cols in (
        ("Placement changed", result["placement_changed"], ("placed_before", "placed_after")),
        ("Same placement, cost changed", result.get("cost_changed", []), ("placed", "cost_before",
                                                                          "cost_after")),
        ("Refused under the candidate", result["refusals_new"], ("site_before", "reason")),
        ("No longer refused", result["refusals_gone"], ("site_after", "reason_before")),
    ):
        if not rows:
            continue
        jt = Table(title=f"{title} ({len(rows)})")
        for c in ("job", "tenant", "name", *cols):
            jt.add_column(c)
        for r in rows[:50]:
            jt.add_row(*(str(r.get(c) or "-") for c in ("job", "tenant", "name", *cols)))
        console.print(jt)
