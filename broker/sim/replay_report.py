"""`szb policy replay --report DIR`: summary.json and titled PNG plots of the diff."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PANELS = {
    "cost": "Total cost ({currency})",
    "p50_wait_s": "Wait p50 (s)",
    "p95_wait_s": "Wait p95 (s)",
    "bursts": "Jobs burst to a cloud",
    "rejected": "Jobs refused",
    "never_started": "Never started",
    "late_jobs": "Late (over max_wait)",
    "late_finish_jobs": "Finished late",
}
"""Key of the run's totals -> its panel's title: the rows of the command's table."""


def figure(v: Any, sign: bool = False) -> str:
    """A total as the table and the plots show it: counts whole, costs and seconds to the cent
    (`:g` printed 14,355.25 as 14355.2 and a million as 2.27301e+06), "-" for nothing measured."""
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:+,}" if sign else f"{v:,}"
    if isinstance(v, float):
        if v != 0 and abs(v) < 0.005:  # (a change of 0.004 is no 0.00)
            return f"{v:+.2g}" if sign else f"{v:.2g}"
        return f"{v:+,.2f}" if sign else f"{v:,.2f}"
    return str(v)


def write_replay_report(folder: Path, result: Mapping[str, Any]) -> list[Path]:
    """Write the diff and its plots; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "summary.json"]
    written[0].write_text(json.dumps(dict(result), indent=2, default=str))
    a, b = result["current"], result["candidate"]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.0 * len(PANELS), 3.4))
    for ax, (key, title) in zip(axes, PANELS.items(), strict=True):
        shown = [a.get(key), b.get(key)]  # None: nothing to measure (no job ran: no wait), as the table's "-"
        values = [v or 0 for v in shown]
        bars = ax.bar(["current", "candidate"], values, color=["#4c72b0", "#dd8452"])
        ax.bar_label(bars, labels=[figure(v) for v in shown])
        ax.set_ylim(0, max(values) * 1.15 or 1.0)  # (counts and costs: never a negative axis)
        ax.set_title(title.format(currency=result.get("currency", "")))
    fig.suptitle(f"Replay of {result['jobs']} recorded jobs: current vs candidate policy")
    fig.tight_layout()
    path = folder / "totals.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    counts = {
        "placement changed": len(result["placement_changed"]),
        "newly refused": len(result["refusals_new"]),
        "no longer refused": len(result["refusals_gone"]),
    }
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(list(counts), list(counts.values()), color="#55a868")
    ax.set_ylabel("jobs")
    ax.set_ylim(0, max(counts.values()) * 1.15 or 1.0)  # (none changed: no axis below 0)
    ax.set_title("Jobs whose outcome changed under the candidate")
    fig.tight_layout()
    path = folder / "changes.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
