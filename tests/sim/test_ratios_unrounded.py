"""`cost_ratio` and `offline_ratio` divide the policy's cost, not its rounded figure (issue 15
held-out check).

The ratios divided the policy's cost as rounded to the cent for the JSON by the unrounded
bound and offline cost, so a one-job trace that the policy runs exactly as the bound and the
offline schedule do (0.772 CNY each) reported `cost_ratio` 0.9974: a policy apparently below
its lower bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_a_policy_that_matches_the_references_has_ratios_of_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "one.csv"
    trace.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
        "scheduled_time\nopenb-pod-4000,18708,64512,1,1000,,LS,Running,11498310,11500663,11498347\n"
    )  # (row 4,001 of the bundled trace: 2,316 s on one GPU)
    policy_file = str(ROOT / "configs" / "policy-sim.yaml")
    code = main(["simulate", "--trace", str(trace), "--policy", policy_file, "-o", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    policy = result["strategies"]["policy"]
    assert policy["late_jobs"] == 0 and policy["cost"] == result["lower_bound_cost"] == 0.77
    assert result["offline_cost"] == 0.77
    assert (result["cost_ratio"], result["offline_ratio"], policy["cost_ratio"]) == (1.0, 1.0, 1.0)
