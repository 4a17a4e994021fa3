"""Chaos rounds: SIGKILL `szb serve` at random moments during bursts, and count what broke.

    .venv/bin/python bench/chaos.py --rounds 30 --json [--store sqlite|postgresql|both]
        [--jobs 16] [--kills 8] [--max-alive 3] [--seed 1]

Each round is `tests.crash.chaos.run_round` (read its docstring for what is killed and what
is counted): a fresh broker and fresh clouds (moto for AWS and libcloud, the ECS double for
Alibaba; instances run the real UserData), `--jobs` jobs submitted over the round, `--kills`
SIGKILLs each 0–`--max-alive` s after the broker is ready. PostgreSQL rounds use
``SZB_PG_DSN`` (``eval "$(scripts/pg-test.sh env)"``), one fresh database per round.

The JSON has one entry per store: rounds run, kills, jobs, instances, attempts, the summed
counts (all must be 0), the seconds per round and the details of any round with a problem.
Each round is also written to stderr as one JSON line as soon as it ends. Exit status 1 when
any count is not 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.crash.chaos import ChaosPlan, ChaosReport, run_round  # noqa: E402
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint  # noqa: E402
from tests.doubles.moto_front import MotoFront  # noqa: E402

ECS_KEYS = {"ak-test": "sk-test"}
_names = itertools.count()


@contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server at `server_dsn`; dropped afterwards."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"szb_chaos_{os.getpid()}_{next(_names)}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def one_round(plan: ChaosPlan, store: str, moto: MotoFront, endpoint: EcsEndpoint) -> ChaosReport:
    moto.reset()
    ecs = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    endpoint.handler = ecs
    folder = Path(tempfile.mkdtemp(prefix="szb-chaos-"))
    try:
        if store == "postgresql":
            server = os.environ.get("SZB_PG_DSN")
            if not server:
                raise SystemExit('--store postgresql needs SZB_PG_DSN (eval "$(scripts/pg-test.sh env)")')
            with fresh_database(server) as dsn:
                return run_round(plan, folder, moto, ecs, endpoint.address, store_dsn=dsn)
        return run_round(plan, folder, moto, ecs, endpoint.address)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def summarise(reports: list[ChaosReport]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rounds": len(reports),
        "kills": sum(r.kills for r in reports),
        "jobs": sum(r.jobs for r in reports),
        "instances": sum(r.instances for r in reports),
        "attempts": sum(r.attempts for r in reports),
    }
    for name in ChaosReport.COUNTS:
        out[name] = sum(getattr(r, name) for r in reports)
    seconds = [r.seconds for r in reports]
    out["round_seconds_p50"] = statistics.median(seconds) if seconds else 0.0
    out["round_seconds_max"] = max(seconds, default=0.0)
    out["problem_rounds"] = [
        {"seed": r.seed, "problems": r.problems(), "details": r.details} for r in reports if r.problems()
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per store")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--jobs", type=int, default=16, help="jobs per round")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs per round")
    parser.add_argument("--max-alive", type=float, default=3.0, help="latest kill after ready (s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first round")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.rounds < 1 or args.jobs < 1 or args.kills < 0:
        parser.error("--rounds and --jobs must be >= 1, --kills >= 0")
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    moto = MotoFront.start()
    endpoint = EcsEndpoint.start(credentials=ECS_KEYS)
    result: dict[str, Any] = {"jobs_per_round": args.jobs, "kills_per_round": args.kills,
                              "max_alive_s": args.max_alive}
    try:
        for store in stores:
            reports = []
            for n in range(args.rounds):
                plan = ChaosPlan(
                    jobs=args.jobs, kills=args.kills, seed=args.seed + n, max_alive_s=args.max_alive
                )
                report = one_round(plan, store, moto, endpoint)
                reports.append(report)
                # One JSON line per round on stderr, so a long series can be read while it runs.
                line = {k: v for k, v in report.as_dict().items() if k != "details" or report.problems()}
                print(json.dumps({"round": n + 1, **line}), file=sys.stderr, flush=True)
            result[store] = summarise(reports)
    finally:
        moto.stop()
        endpoint.stop()
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    bad = any(result[s][c] for s in stores for c in ChaosReport.COUNTS)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
