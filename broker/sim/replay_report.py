"""`szb policy replay --report DIR`: summary.json and titled PNG plots of the diff."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_replay_report(folder: Path, result: Mapping[str, Any]) -> list[Path]:
    """Write the diff and its plots; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "summary.json"]
    written[0].write_text(json.dumps(dict(result), indent=2, default=str))
    a, b = result["current"], result["candidate"]
    panels = (
        ("cost", f"Total cost ({result.get('currency', '')})"),
        ("p50_wait_s", "Wait p50 (s)"),
        ("p95_wait_s", "Wait p95 (s)"),
        ("bursts", "Jobs burst to a cloud"),
        ("rejected", "Jobs refused"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.bar(["current", "candidate"], [a.get(key) or 0, b.get(key) or 0], color=["#4c72b0", "#dd8452"])
        ax.set_title(title)
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
    ax.set_title("Jobs whose outcome changed under the candidate")
    fig.tight_layout()
    path = folder / "changes.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
