"""`szb backup`: a consistent copy of the broker's embedded SQLite store, taken while it runs."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any


def register(cmds: Any) -> None:
    p = cmds.add_parser(
        "backup", help="copy the broker's SQLite store to FILE (safe while szb serve runs); checked"
    )
    p.add_argument("file", type=Path, help="the copy to write (a new file)")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="the broker's data dir (default .szb)"
    )
    p.set_defaults(handler=cmd_backup)


def _fail(message: str) -> int:
    print(f"szb backup: {message}", file=sys.stderr)
    return 1


def cmd_backup(args: argparse.Namespace) -> int:
    from broker.config import DEFAULT_DATA_DIR
    from broker.store.snapshot import copy_sqlite

    db: Path = (args.data_dir or DEFAULT_DATA_DIR) / "broker.db"
    dest: Path = args.file
    if dest.exists():
        return _fail(f"{dest} exists: name a new file (a backup never overwrites one)")
    folder = dest.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):  # (SQLite says only "unable to open")
        why = "no such folder" if not folder.is_dir() else "its folder is not writable"
        return _fail(f"cannot write {dest}: {why} ({folder})")
    # Written beside its final name, then renamed: an interrupted backup leaves no file that
    # looks complete.
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        # Only its owner may read it, as the data dir (0700) keeps the store: jobs' specs and
        # environments are in it. SQLite keeps an empty file's mode (its journal takes it too).
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        copy_sqlite(db, partial)
        with closing(sqlite3.connect(partial)) as copy:
            verdict = str(copy.execute("PRAGMA integrity_check").fetchone()[0])
            jobs = int(copy.execute("SELECT count(*) FROM jobs").fetchone()[0])
    except FileNotFoundError as exc:
        partial.unlink(missing_ok=True)
        return _fail(f"{exc} (give --data-dir DIR; a PostgreSQL store is backed up with pg_dump)")
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        return _fail(str(exc))
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        return _fail(f"the store at {db} is damaged ({verdict}); no copy was kept")
    os.replace(partial, dest)
    print(f"{dest}: {jobs} jobs, copied from {db} and checked. To restore: stop szb serve, replace "
          f"{db} with this file (delete {db.name}-wal and {db.name}-shm beside it), start szb serve.")
    return 0
