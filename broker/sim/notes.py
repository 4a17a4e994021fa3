"""Why a ratio of `szb simulate` is under 1, in words for its JSON and table (`*_ratio_note`)."""

from __future__ import annotations

from typing import Any

OFFLINE_NOTE_BELOW = 0.999
"""An `offline_ratio` under this gets a word of why: the offline schedule prices spot at its
expected billed hours, so a policy whose spot runs the world spared lands a hair under 1 (0.9999)."""


def below_bound(policy: dict[str, Any], outside: int, per_strategy: bool) -> str:
    """Why the policy cost less than the all-on-time bound: the jobs it did not run once and on
    time, or its spot runs past the restart limit (estimates shorter than the runtimes)."""
    over = policy.get("spot_over_restart_limit", 0)
    if not outside and over:
        return (f"below 1: the policy ran {over} job(s) on spot past the restart limit (its estimates were "
                "shorter than the runtimes), which the bound and the other references keep to")
    said = (f"below 1: the bound runs every job once and on time, and the policy did not for {outside} "
            "(refused, started late or never, stopped and run again, or ended late on-prem)")
    return said if per_strategy else f"{said}; --per-strategy-bounds gives each strategy a bound with its own"


def bound_note(infeasible: bool, left_out: int, per_strategy: bool) -> str | None:
    """Why `lower_bound_cost` is null though the bound was solved (no schedule is on time), and
    the jobs it leaves out (no partition holds them and no cloud runs them: late in every run)."""
    said = []
    if infeasible:
        said.append("none: no schedule starts every job within its max_wait, so no cost ratio; " + (
            "each strategy's lower_bound_cost allows as many late jobs as it had" if per_strategy
            else "--per-strategy-bounds gives each strategy a bound with its own late jobs"))
    if left_out:
        said.append(f"{left_out} job(s) no option can start (no partition holds them, no cloud runs them) "
                    "left out of the bound: late in every strategy")
    return "; ".join(said) or None


def offline_note(policy: dict[str, Any], offline_late: int, ratio: float | None) -> str | None:
    """Why the offline schedule is no floor under the policy's cost here (None: it is one)."""
    late = policy["late_jobs"]
    said = f"the offline schedule started {offline_late} jobs late, the policy {late}"
    if offline_late > late:  # (a budget no schedule can stretch: the greedy pays the dearest first)
        return f"{said}: a reference later than the policy, no floor under its cost"
    if ratio is None or ratio >= OFFLINE_NOTE_BELOW:
        return None
    over, stopped = policy["spot_over_restart_limit"], policy.get("preempted_jobs", 0)
    if offline_late < late:
        why = "starting them on time costs more"
    elif over:  # (its estimates were short: it took spot the schedule keeps off)
        why = f"the policy ran {over} job(s) on spot past the restart limit, kept to by the schedule"
    elif stopped:  # (their rest ran after their windows, where the schedule runs each job once)
        why = f"the policy stopped {stopped} job(s) for bursts and ran them again"
    else:
        why = "the schedule is a heuristic"
    return f"below 1: {said}, and {why}"
