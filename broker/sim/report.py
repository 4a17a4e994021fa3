"""The report folder: `summary.md` plus PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.sim.extras import check_plots
from broker.sim.metrics import RunResult

PLOTS = ("queue.png", "onprem_utilisation.png", "cost_by_strategy.png", "wait_cdf.png")


def ensure_report_dir(folder: Path) -> Path:
    """Check, before the run, that the `--report` folder can be made and written: ValueError naming
    it when it cannot be. The check's folders and probe file are removed again (no empty folder)."""
    if str(folder) in ("", "."):
        raise ValueError("--report: name a folder (the current one is not taken for a report)")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--report {folder}: a file, not a folder (a report is a folder of files)")
    check_plots()
    # os.access alone said yes to /proc as root, and mkdir failed after the whole run: so really
    # make the folders and write a file, then take back what was made.
    made: list[Path] = []
    try:
        for step in reversed([folder, *folder.parents]):
            if not step.exists():
                step.mkdir()
                made.append(step)
        probe = folder / f".szb-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--report {folder}: {exc.strerror or exc}") from exc
    finally:
        for step in reversed(made):
            try:
                step.rmdir()
            except OSError:
                pass  # (something else wrote there meanwhile: not ours to remove)
    return folder


def write_report(folder: Path, result: Mapping[str, Any], runs: Mapping[str, RunResult]) -> list[Path]:
    """Write summary.md, result.json and the plots into `folder`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    plots = _Plots(folder, result, runs)
    plots.over_time()
    plots.cost_bars()
    plots.wait_cdf()
    if result["strategies"].get("policy", {}).get("tenants"):
        plots.tenants()
    written = plots.written
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    written.append(folder / "result.json")
    (folder / "summary.md").write_text(summary_markdown(result))
    written.append(folder / "summary.md")
    return written


class _Plots:
    """The report's PNGs, each titled (the title also goes into the PNG's text chunks)."""

    def __init__(self, folder: Path, result: Mapping[str, Any], runs: Mapping[str, RunResult]) -> None:
        import matplotlib.pyplot as plt
        import numpy as np

        self.plt, self.np = plt, np
        self.folder, self.result, self.runs = folder, result, runs
        self.written: list[Path] = []

    def save(self, fig: Any, name: str, title: str) -> None:
        path = self.folder / name
        if len(fig.axes) == 1:
            fig.axes[0].set_title(title, fontsize=10)
        else:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        # The title and the shown x range also go into the PNG's text chunks (for tools and tests).
        left, right = fig.axes[0].get_xlim()
        fig.savefig(path, dpi=110, metadata={"Title": title, "Description": f"x {left:.6g} {right:.6g}"})
        self.plt.close(fig)
        self.written.append(path)

    def over_time(self) -> None:
        np, scenario = self.np, self.result.get("scenario", "")
        for name, attr, label, title in (
            ("queue.png", "queue", "queued jobs", "Queued jobs over time"),
            ("onprem_utilisation.png", "onprem_util", "on-prem GPU utilisation", "On-prem GPU use over time"),
        ):
            fig, ax = self.plt.subplots(figsize=(9, 3.5))
            busy_until = 0.0
            for strategy, run in self.runs.items():
                t = np.array(run.series.t) / 3600
                values = np.array(getattr(run.series, attr), dtype=float)
                # The engine samples the state in force *until* each event time (before handling
                # it), so a sample closes its interval: "pre" steps, not "post" (which drew the
                # last queue value over the whole gap to the next, sparse, sample).
                ax.step(t, values, where="pre", label=strategy, linewidth=0.9)
                nonzero = np.nonzero(values)[0]
                if nonzero.size:
                    busy_until = max(busy_until, float(t[nonzero[-1]]))
            if busy_until > 0:
                ax.set_xlim(0, busy_until * 1.03)  # no empty tail after the last job
            ax.set_xlabel("simulated time (h)")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
            self.save(fig, name, f"{title} ({scenario})" if scenario else title)

    def cost_bars(self) -> None:
        strategies = self.result["strategies"]
        fig, ax = self.plt.subplots(figsize=(7, 3.5))
        names = list(strategies)
        onprem = [strategies[n]["cost_onprem"] for n in names]
        cloud = [strategies[n]["cost_cloud"] for n in names]
        ax.bar(names, onprem, label="on-prem (shadow price)")
        ax.bar(names, cloud, bottom=onprem, label="cloud")
        if self.result.get("lower_bound_cost"):
            lb = self.result["lower_bound_cost"]
            ax.axhline(lb, color="k", linestyle="--", linewidth=1, label="lower bound")
        ax.set_ylabel(f"cost ({self.result.get('currency', '')})")
        ax.legend(fontsize=8)
        self.save(fig, "cost_by_strategy.png", "Cost by strategy: on-prem shadow price + cloud")

    def wait_cdf(self) -> None:
        np = self.np
        fig, ax = self.plt.subplots(figsize=(7, 3.5))
        for strategy, run in self.runs.items():
            waits = np.sort([r.wait_s for r in run.records if not r.rejected and not math.isnan(r.start_s)])
            if waits.size:
                ax.step(
                    np.maximum(waits, 1.0) / 60,
                    np.arange(1, waits.size + 1) / waits.size,
                    where="post",
                    label=strategy,
                    linewidth=0.9,
                )
        ax.set_xscale("log")
        ax.set_xlabel("wait before start (min, log; 0 shown at 1 s)")
        ax.set_ylabel("share of jobs")
        if ax.get_lines():  # (no job started: a legend of nothing only warns on stderr)
            ax.legend(fontsize=8)
        self.save(fig, "wait_cdf.png", "Wait before start (CDF)")

    def tenants(self) -> None:
        """Per tenant: p95 wait against max_wait, and on-prem share used against entitled."""
        policy = self.result["strategies"]["policy"]
        tenants = policy["tenants"]
        fig, (left, right) = self.plt.subplots(1, 2, figsize=(10, 3.5))
        names = list(tenants)
        x = self.np.arange(len(names))
        left.bar(x - 0.2, [(tenants[n]["p95_wait_s"] or 0) / 60 for n in names], 0.4, label="p95 wait")
        left.bar(x + 0.2, [tenants[n]["max_wait_s"] / 60 for n in names], 0.4, label="max_wait (median)")
        left.set_yscale("symlog")
        left.set_ylabel("minutes (symlog)")
        left.set_xticks(x, names, fontsize=8)
        left.legend(fontsize=8)
        right.bar(x - 0.2, [tenants[n]["onprem_share_used"] for n in names], 0.4, label="on-prem share used")
        right.bar(x + 0.2, [tenants[n]["onprem_share_entitled"] for n in names], 0.4, label="entitled")
        right.set_xticks(x, names, fontsize=8)
        left.set_title("p95 wait vs max_wait", fontsize=9)
        right.set_title(f"on-prem share (Jain's index {policy.get('jain_index')})", fontsize=9)
        right.legend(fontsize=8)
        self.save(fig, "tenants.png", "Per tenant (policy)")


def sample_note(result: Mapping[str, Any]) -> str | None:
    """What a `--jobs N` run replayed, when it left jobs out (its figures are not the workload's)."""
    n = result.get("jobs_sampled")
    if not n:
        return None
    first = f"the first {n} of {result.get('sample_of')} jobs in arrival order"
    return f"A sample: {first} (--jobs {n}), not the whole workload"


def runtime_note(result: Mapping[str, Any]) -> str | None:
    """How many trace jobs ran longer than a job spec's runtime limit, simulated at that limit."""
    from broker.sim.jobs import MAX_RUNTIME_S

    n, days = result.get("runtime_capped"), f"{MAX_RUNTIME_S / 86400:g} days"
    if not n:
        return None
    jobs = "1 job" if n == 1 else f"{n} jobs"
    return f"{jobs} ran longer than {days} (the longest runtime a job spec accepts): simulated as {days}"


def model_note(result: Mapping[str, Any]) -> str | None:
    """The models the trace's owner does not name, whose jobs take any accelerator (counted over
    the whole trace, a `--jobs` sample or not), or None."""
    counts = result.get("any_accelerator") or {}
    if not counts:
        return None
    models = ", ".join(f"{m} ({n})" for m, n in sorted(counts.items()))
    return f"Jobs of the trace's undisclosed models, run on any accelerator: {models}"


def refusal_note(result: Mapping[str, Any]) -> str | None:
    """`policy: N refused by rules: rule + rule (n); ...` (the policy run's `refusals`), or None."""
    counts = result["strategies"].get("policy", {}).get("refusals") or {}
    if not counts:
        return None
    why = "; ".join(f"{reason} ({n})" for reason, n in counts.items())
    return f"policy: {sum(counts.values())} refused by rules (szb explain gives a job's reasons): {why}"


def summary_markdown(result: Mapping[str, Any]) -> str:
    cur = result.get("currency", "")
    lines = [
        f"# Simulation: {result.get('scenario', '')}",
        "",
        f"Policy `{result.get('policy', '')}` (hash `{result.get('policy_hash', '')}`), "
        f"seed {result.get('seed')}, time scale {result.get('time_scale')}, "
        f"simulated in {result.get('sim_wall_s')} s.",
        "",
        *([f"**{note}.**", ""] if (note := sample_note(result)) else []),
        *([f"{note}.", ""] if (note := runtime_note(result)) else []),
        *([f"{note}.", ""] if (note := model_note(result)) else []),
        *([note, ""] if (note := refusal_note(result)) else []),
        f"| strategy | jobs | refused | cost ({cur}) | lower bound | cost ratio | p50 wait s | p95 wait s "
        "| SLO | finished late | burst | carbon kg | budget viol. | compliance viol. |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["strategies"].items():
        lines.append(
            f"| {name} | {s['jobs']} | {s['rejected']} | {money(s['cost'])} "
            f"| {_f(s.get('lower_bound_cost'))} "
            f"| {_f(s.get('cost_ratio'))} | {_f(s['p50_wait_s'])} | {_f(s['p95_wait_s'])} "
            f"| {_f(s['slo_attainment'], '.3f')} | {s['late_finish_jobs']} | {s['burst_fraction']:.3f} "
            f"| {carbon(s['carbon_kg'])} | {s['budget_violations']} | {s['compliance_violations']} |"
        )
    frontier = result.get("frontier", {})
    lines += [
        "",
        *_bound_lines(result, cur),
        *_offline_lines(result, cur),
        f"Policy on the cost-vs-SLO frontier: {_f(frontier.get('policy_on_frontier'))}"
        + (f" (dominated by {', '.join(frontier['dominated_by'])})" if frontier.get("dominated_by") else "")
        + ".",
        "",
        "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS) + ".",
        "",
    ]
    policy = result["strategies"].get("policy", {})
    if policy.get("tenants"):
        lines += [
            f"## Per tenant (policy; Jain's fairness index {_f(policy.get('jain_index'))})",
            "",
            "| tenant | weight | jobs | p95 wait s | median max_wait s | SLO | p95 slowdown | on-prem used "
            "| entitled | used/entitled |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, t in policy["tenants"].items():
            lines.append(
                f"| {name} | {_f(t['weight'])} | {t['jobs']} | {_f(t['p95_wait_s'])} | {_f(t['max_wait_s'])} "
                f"| {t['slo_attainment']:.3f} | {_f(t['p95_slowdown'])} | {t['onprem_share_used']:.3f} "
                f"| {t['onprem_share_entitled']:.3f} | {_f(t['used_over_entitled'])} |"
            )
        lines += ["", "Plot: [tenants.png](tenants.png).", ""]
    return "\n".join(lines)


def _bound(result: Mapping[str, Any], cur: str) -> str:
    """The headline bound, or why there is none (the table's footer tells the two apart too)."""
    if result.get("lower_bound_s") is None:
        return "not computed"
    if result.get("lower_bound_cost") is None:  # solved: no schedule meets every max_wait
        return "none: no schedule starts every job on time"
    return f"{_f(result['lower_bound_cost'])} {cur}"


def money(v: float) -> str:
    """A strategy's cost for a table: whole units from 100 up, cents below (a run of a few CNY read
    "4" beside a bound of 3.90)."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def carbon(kg: float) -> str:
    """A strategy's carbon for a table: whole kg from 100 up, tenths below, as the JSON keeps it
    (whole kg read "0" for a run the JSON puts at 0.3 kg, and "1" beside another at 0.7)."""
    return f"{kg:,.0f}" if abs(kg) >= 100 else f"{kg:,.1f}"


def _f(v: Any, spec: str = ",.2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:{spec}}"
    return str(v)


def _bound_lines(result: Mapping[str, Any], cur: str) -> list[str]:
    """The LP bound's lines: the all-on-time bound with the policy's ratio (and why it is under 1)."""
    note = result.get("cost_ratio_note")
    return [
        f"Lower bound (LP relaxation, HiGHS), every job starting within its max_wait: "
        f"{_bound(result, cur)}. Policy cost ratio: {_f(result.get('cost_ratio'))}"
        + (f" ({note})." if note else "."),
        "",
        "A strategy's own lower bound (when solved) is the least cost of any schedule with at most as many "
        "late jobs as it had (a job is late here when it was not one run within its window: it started after "
        "its max_wait or never, was stopped and run again, or finished late), so its ratio is at least 1.",
        "",
    ]


def _offline_lines(result: Mapping[str, Any], cur: str) -> list[str]:
    """The offline reference schedule's line (none when the references were skipped)."""
    if result.get("offline_cost") is None:
        return []
    o = result.get("offline", {})
    where = f"{o.get('onprem_jobs', 0)} jobs on-prem, {o.get('cloud_jobs', 0)} in the cloud"
    if o.get("unplaced"):
        where += f", {o['unplaced']} unplaced"
    if o.get("late_jobs"):
        where += f", {o['late_jobs']} late"
    return [
        f"Offline reference schedule (feasible and clairvoyant, {o.get('method', 'greedy')}; {where}): "
        f"{_f(result['offline_cost'])} {cur}. Policy offline ratio: {_f(result.get('offline_ratio'))}"
        + (f" ({note})." if (note := result.get("offline_ratio_note")) else "."),
        "",
    ]
