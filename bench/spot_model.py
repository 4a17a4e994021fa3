"""Figure for the README: expected billed hours on spot, with and without checkpoints.

    .venv/bin/python bench/spot_model.py [--out docs/spot-model.png]

Curves from `broker.burst.spot.outlook` (the model the decision, the baselines and the LP
bound all use) for the lowest and highest interruption rates of configs/policy-sim.yaml's cloud
sites (0.05 and 0.12 per hour; `aliyun-cn-wulanchabu`'s 0.08 lies between).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker.burst.spot import outlook  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/spot-model.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [0.5 * i for i in range(1, 121)]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for rate in (0.05, 0.12):
        for interval, style in ((None, "-"), (0.5, "--")):
            ys = [outlook(h, rate, interval, 0.0).billed_h / h for h in hours]
            label = f"λ={rate}/h, " + ("restart from zero" if interval is None else "checkpoint every 30 min")
            ax.plot(hours, ys, style, label=label)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_ylim(0.9, 4.0)
    ax.set_xlabel("runtime (h)")
    ax.set_ylabel("expected billed hours / runtime")
    ax.set_title("Spot: what interruptions cost (spot wins while price ratio x this < 1)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(args.out, dpi=110)
    except (ValueError, OSError) as exc:  # (a file type matplotlib cannot write, a folder it cannot)
        parser.error(f"--out {args.out}: {exc}")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
