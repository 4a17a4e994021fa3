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
    for table in _strategy_table(result, console.width):
        console.print(table)
    if result["strategies"].get("policy", {}).get("tenants"):
        for table in _tenant_table(result, console.width):
            console.print(table)
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


def _strategy_table(result: dict[str, Any], width: int) -> list[Any]:
    from broker.sim.report import carbon, money

    cur = result.get("currency", "")
    title = f"szb simulate: {result.get('scenario')} (time scale {result.get('time_scale')})"
    headers = ["strategy", *(f"cost {cur}" if c == "cost" else c for c in _STRATEGY_COLS)]
    rows = [
        [
            name,
            str(s["jobs"]),
            str(s["rejected"]),  # (not in jobs, cost or SLO: no allowed offer would take them)
            money(s["cost"]),
            _fmt(s.get("cost_ratio")),
            _fmt(s["p50_wait_s"]),
            _fmt(s["p95_wait_s"]),
            _fmt(s["slo_attainment"], ".3f"),
            f"{s['burst_fraction']:.3f}",
            carbon(s["carbon_kg"]),
            str(s["budget_violations"]),
            str(s["compliance_violations"]),
        ]
        for name, s in result["strategies"].items()
    ]
    return _fitted((title, "strategies, continued"), [*headers, "budget viol.", "compl. viol."], rows, width)


def _tenant_table(result: dict[str, Any], width: int) -> list[Any]:
    jain = _fmt(result["strategies"]["policy"].get("jain_index"))
    rows = [
        [
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
        ]
        for name, t in result["strategies"]["policy"]["tenants"].items()
    ]
    titles = (f"policy, per tenant (Jain's fairness index {jain})", "per tenant, continued")
    return _fitted(titles, list(_TENANT_COLS), rows, width)


def _fitted(titles: tuple[str, str], headers: list[str], rows: list[list[str]], width: int) -> list[Any]:
    """The table, or where it is wider than `width` its columns in tables that fit, each led by
    the first (rich cut every figure to `6,…` at 80 columns); headers wrap at their spaces."""
    from rich.cells import cell_len
    from rich.table import Table

    cells = [max((cell_len(row[i]) for row in rows), default=0) for i in range(len(headers))]
    fixed: list[int | None]
    if sum(max(cell_len(h), c) + 3 for h, c in zip(headers, cells, strict=True)) + 1 <= width:
        groups, fixed = [list(range(len(headers)))], [None] * len(headers)
    else:
        fits = [max(c, *(cell_len(w) for w in h.split())) for h, c in zip(headers, cells, strict=True)]
        groups, fixed, rest = [], list(fits), list(range(1, len(headers)))
        while rest:  # (each column costs its width, its padding and a border: 3)
            group, used = [0], fits[0] + 4
            while rest and (len(group) == 1 or used + fits[rest[0]] + 3 <= width):
                used += fits[rest[0]] + 3
                group.append(rest.pop(0))
            groups.append(group)
    tables = []
    for n, group in enumerate(groups):
        table = Table(title=titles[min(n, 1)])
        for i in group:
            table.add_column(headers[i], justify="left" if i == 0 else "right", width=fixed[i])
        for row in rows:
            table.add_row(*(row[i] for i in group))
        tables.append(table)
    return tables


def _fmt(v: Any, spec: str = ",.2f") -> str:
    if v is None:
        return "-"
    return f"{v:{spec}}" if isinstance(v, float) else str(v)
