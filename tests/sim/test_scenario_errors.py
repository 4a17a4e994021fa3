"""A scenario file's errors name FILE:LINE:COL and the field, and a site or tenant the policy
lacks is refused instead of silently leaving that world at its defaults (issue 15 review)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli import main
from broker.policy import load_policy
from broker.sim.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "configs" / "policy-sim.yaml"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: x\nseed: abc\n", ":2:7: seed: "),
        ("name: x\ntime_scale: 0\n", ":2:13: time_scale: "),
        ("name: x\nprovisioning: {min_s: -1}\n", ":2:23: provisioning.min_s: "),
        # (drawn as if min and max were swapped, said nothing)
        ("name: x\nprovisioning: {min_s: 600, mode_s: 60, max_s: 10}\n", ":2:1: provisioning: must have "),
        ("name: x\nbogus: 1\n", ":2:1: bogus: unknown field"),
        # Review: each was placed a line too far: past the last line, on the line after a key
        # with no colon, and on the next key's line for an empty value.
        ("name: [\n", ":1:8: YAML: "),
        ("name: x\nseed 1\ntime_scale: 2\n", ":2:1: YAML: while scanning a simple key could not find"),
        ("name: x\nseed:\ntime_scale: 2\n", ":2:1: seed: input should be a valid integer"),
        ("name: x\ntime_scale:\n", ":2:1: time_scale: input should be a valid number"),
        ("name: x\nseed: [1, 2\n\n", ":2:12: YAML: while parsing a flow sequence begun at 2:7"),
        ("- a\n- b\n", ":1:1: a scenario must be a YAML mapping"),
        # (a raw pydantic dump of Checkpoint, with no file or line, when the jobs were built)
        ("name: x\ncheckpoint_interval_s: 90.5\n", ":2:24: checkpoint_interval_s: must be a whole number"),
    ],
)
def test_a_broken_scenario_names_file_line_and_field(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}{where}"), str(err.value)


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("redecide_head:", ":8:1: redecide_head: input should be a valid integer"),
        ("time_scale 50", ":8:1: YAML: while scanning a simple key could not find expected ':'"),
        ("audit_every: [256", ":8:18: YAML: while parsing a flow sequence begun at 8:14"),
    ],
)
def test_simulate_names_the_line_of_a_broken_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, where: str
) -> None:
    """A bundled scenario with its seventh row, after a comment line, broken: the error is at line 8."""
    rows = (ROOT / "configs" / "scenarios" / "alibaba-peak.yaml").read_text().splitlines()
    assert rows[7].startswith("max_runtime_s:")
    rows[7] = line
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("\n".join(rows[:8]) + "\n")  # (the last line, for the unclosed bracket)
    argv = ["simulate", "--synthetic", "5", "--policy", str(POLICY), "--scenario", str(scenario)]
    assert main([*argv, "-o", "json"]) == 1
    assert f"szb: error: {scenario}{where}" in capsys.readouterr().err


def test_a_site_or_tenant_the_policy_lacks_is_refused(tmp_path: Path) -> None:
    policy = load_policy(POLICY)
    sites, tenants = [s.id for s in policy.sites], [t.id for t in policy.tenants]
    path = tmp_path / "scenario.yaml"
    path.write_text("name: x\nsites:\n  aliyun-cn-bejing: {stockouts: {per_day: 3}}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path, sites=sites, tenants=tenants)
    assert str(err.value) == (
        f"{path}:3:3: sites.aliyun-cn-bejing: not in the policy (did you mean 'aliyun-cn-beijing'?)"
    )
    path.write_text("name: x\ntenants: {pku-nlp: 2, ghost: 1}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path, sites=sites, tenants=tenants)
    assert str(err.value).startswith(f"{path}:2:23: tenants.ghost: not in the policy (the policy's: pku-nlp")
    path.write_text("name: x\ntenants: {pku-nlp: 2}\nsites: {aliyun-cn-beijing: {stockouts: {per_day: 3}}}\n")
    assert load_scenario(path, sites=sites, tenants=tenants).tenants == {"pku-nlp": 2}


def test_simulate_checks_the_scenario_against_its_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("name: x\nsites: {nowhere: {stockouts: {per_day: 3}}}\n")
    argv = [
        "simulate",
        "--synthetic",
        "5",
        "--policy",
        str(POLICY),
        "--scenario",
        str(scenario),
        "-o",
        "json",
    ]
    assert main(argv) == 1
    assert f"szb: error: {scenario}:2:9: sites.nowhere: not in the policy" in capsys.readouterr().err


def test_an_unreadable_scenario_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ScenarioError) as err:  # (the decode error had no file name)
        load_scenario(path)
    assert str(err.value).startswith(f"{path}: cannot read: 'utf-8' codec"), str(err.value)
