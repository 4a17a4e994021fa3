"""`szb hardware classify`: TPP, PD and export class of every catalog accelerator."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from broker.catalog.accelerators import load_accelerators
from broker.compliance.classify import classify
from broker.compliance.regime import load_regimes
from broker.policy import PolicyError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("hardware", help="accelerator catalog and export classification")
    cmds = parser.add_subparsers(dest="hardware_command", required=True, metavar="SUBCOMMAND")
    cls = cmds.add_parser("classify", help="classify every accelerator of the catalog")
    cls.add_argument(
        "--catalog", type=Path, default=None,
        help="default: configs/accelerators.yaml here, else the catalog bundled with the broker",
    )  # fmt: skip
    cls.add_argument(
        "--regimes",
        type=Path,
        default=None,
        help="default: regimes.yaml next to the catalog, else the bundled one",
    )
    cls.add_argument("--regime", default=None, help="regime name (default: the file's default)")
    cls.add_argument("--output", "-o", choices=("json", "table"), default="table")
    cls.set_defaults(handler=cmd_classify)


def _bundled(name: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("broker") / "defaults" / name))


def cmd_classify(args: argparse.Namespace) -> int:
    if args.catalog is None:  # (outside a checkout there is no configs/: the broker's own copies)
        here = Path("configs/accelerators.yaml")
        args.catalog = here if here.is_file() else _bundled("accelerators.yaml")
    regimes_path = args.regimes or args.catalog.parent / "regimes.yaml"
    if args.regimes is None and not regimes_path.is_file():  # (a catalog kept elsewhere: as a policy does)
        regimes_path = _bundled("regimes.yaml")
    try:
        catalog = load_accelerators(args.catalog)
        regimes = load_regimes(regimes_path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    regime = regimes.default if args.regime is None else regimes.get(args.regime)
    if regime is None:
        known = ", ".join(r.name for r in regimes.regimes)
        print(f"szb: error: unknown regime {args.regime!r} (known: {known})", file=sys.stderr)
        return 1
    results = [classify(acc, regime) for acc in catalog]
    if args.output == "json":
        print(json.dumps([r.to_json() for r in results], indent=2))
        return 0
    from rich.table import Table

    from broker.commands._console import Console

    table = Table(title=f"Export classification under {regime.name}")
    for col in ("accelerator", "TPP", "PD", "class", "reason"):
        table.add_column(col, justify="right" if col in ("TPP", "PD") else "left")
    for r in results:
        pd = "?" if r.pd is None else f"{r.pd:.{r.pd_places}f}"
        table.add_row(r.name, f"{r.tpp:,.{r.tpp_places}f}", pd, r.cls, r.reason)
    (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
    return 0
