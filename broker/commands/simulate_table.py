"""`szb simulate`'s table: each strategy's figures, the bound and the offline schedule, the notes."""

from __future__ import annotations

import sys
from typing import Any

_STRATEGY_COLS = (
    *("jobs", "refused", "cost", "cost ratio"),
    *("p50 wait s", "p95 wait s", "SLO", "burst", "carbon kg"),
)
_TENANT_COLS = (
    "tenant",
    "weight",
    "jobs",
    "p95 wait s",
    "median max_wait s",
    "SLO",
    "p95 slowdown",
    "on-prem used",
    "entitled",
    "used/entitled",
    "burst",
)


def print_table(result: dict[str, Any]) -> None:
    from broker.commands._console import Console
    from broker.sim.report import model_note, refusal_note, runtime_note, sample_note

    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(_strategy_table(result))
    if result["strategies"].get("policy", {}).get("tenants"):
        console.print(_tenant_table(result))
    cur = result.get("currency", "")
    line = (
        f"lower bound {_fmt(result.get('lower_bound_cost'))} {cur} ({_bound_terms(result)}); cost ratio "
        f"{_fmt(result.get('cost_ratio'))}"
    )
    if result.get("offline_cost") is not None:
        offline, ratio = _fmt(result["offline_cost"]), _fmt(result.get("offline_ratio"))
        late = (result.get("offline") or {}).get("late_jobs")  # (where none can start every job on time)
        line += f"; offline schedule {offline} {cur}{f' ({late} jobs late)' if late else ''}, ratio {ratio}"
    console.print(f"{line}; simulated in {result['sim_wall_s']} s")
    for key in ("cost_ratio_note", "offline_ratio_note"):
        if note := result.get(key):
            console.print(f"{key.removesuffix('_note').replace('_', ' ')}: {note}", markup=False)
    own_run = result["strategies"].get("policy", {})
    if stopped := own_run.get("preempted_jobs"):
        why = "for a job that would have burst (burst.preempt_patient)"
        # (the SLO counts first starts: what the stops cost the jobs stopped shows in their ends)
        ends = f"; {own_run['late_finish_jobs']} job(s) in all finished after max_wait + runtime"
        console.print(f"policy: {stopped} job(s) stopped on-prem {why}{ends}")
    if note := sample_note(result):  # (figures of the first jobs only: the peaks may come later)
        console.print(note)
    if note := runtime_note(result):
        console.print(note)
    if note := model_note(result):
        console.print(note, markup=False)
    if note := refusal_note(result):
        console.print(note, markup=False)  # (reasons quote rules: brackets are not markup)


def _bound_terms(result: dict[str, Any]) -> str:
    """What the headline bound assumes, and the policy's late starts it does not allow (with
    them a policy can cost less than the bound: its lateness bought it)."""
    own = result["strategies"].get("policy", {})
    late, allowed = own.get("late_jobs") or 0, own.get("late_jobs_allowed_in_bound") or 0
    # (a stop or a refusal counts against the bound too: with no late start, say those)
    said = f"started {late} late" if late else f"ran {allowed} job(s) not once and on time"
    if result.get("lower_bound_s") is None:
        return "not computed"  # (--no-lower-bound, or no jobs)
    terms = "every job on time"
    if result.get("lower_bound_cost") is None:  # solved: no schedule meets every max_wait
        terms = "none: no schedule starts every job on time"
    if not late and not allowed:
        return terms
    if allowed and own.get("lower_bound_cost") is not None:  # its own, solved (--per-strategy-bounds)
        bound = f"{_fmt(own['lower_bound_cost'])} {result.get('currency', '')}"
        return f"{terms}; the policy {said}: its own bound with {allowed} late {bound}, " + (
            f"cost ratio {_fmt(own.get('cost_ratio'))}"
        )
    return f"{terms}; the policy {said}: --per-strategy-bounds gives its own bound"


def _strategy_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    from broker.sim.report import money

    cur = result.get("currency", "")
    table = Table(title=f"szb simulate: {result.get('scenario')} (time scale {result.get('time_scale')})")
    table.add_column("strategy", justify="left")
    for c in (*_STRATEGY_COLS, "budget viol.", "compl. viol."):
        table.add_column(f"cost {cur}" if c == "cost" else c, justify="right")
    for name, s in result["strategies"].items():
        table.add_row(
            name,
            str(s["jobs"]),
            str(s["rejected"]),  # (not in jobs, cost or SLO: no allowed offer would take them)
            money(s["cost"]),
            _fmt(s.get("cost_ratio")),
            _fmt(s["p50_wait_s"]),
            _fmt(s["p95_wait_s"]),
            _fmt(s["slo_attainment"], ".3f"),
            f"{s['burst_fraction']:.3f}",
            f"{s['carbon_kg']:,.0f}",
            str(s["budget_violations"]),
            str(s["compliance_violations"]),
        )
    return table


def _tenant_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    jain = _fmt(result["strategies"]["policy"].get("jain_index"))
    per = Table(title=f"policy, per tenant (Jain's fairness index {jain})")
    for c in _TENANT_COLS:
        per.add_column(c, justify="left" if c == "tenant" else "right")
    for name, t in result["strategies"]["policy"]["tenants"].items():
        per.add_row(
            name,
            _fmt(t["weight"]),
            str(t["jobs"]),
            _fmt(t["p95_wait_s"]),
            _fmt(t["max_wait_s"]),
            f"{t['slo_attainment']:.3f}",
            _fmt(t["p95_slowdown"]),
            f"{t['onprem_share_used']:.3f}",
            f"{t['onprem_share_entitled']:.3f}",
            _fmt(t["used_over_entitled"]),
            f"{t['burst_fraction']:.3f}",
        )
    return per


def _fmt(v: Any, spec: str = ",.2f") -> str:
    if v is None:
        return "-"
    return f"{v:{spec}}" if isinstance(v, float) else str(v)
