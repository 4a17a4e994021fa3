"""A rule comparing a field with a value it never takes loads as an error at that value's column
(held-out review: `job.priority == "urgent"`, `hardware.class == "3A090a"`, `site.country ==
"cn"`, `offer.accelerator == "h800"` all passed `szb policy check` and never matched: for an
export rule, a rule that never applies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import load_policy
from broker.yamlfile import PolicyError

ROOT = Path(__file__).resolve().parents[2]


def _with_rule(tmp_path: Path, expr: str) -> Path:
    text = (ROOT / "broker" / "defaults" / "policy.yaml").read_text()
    text += f"  rules:\n    - id: r\n      deny: '{expr}'\n      reason: test\n"
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('job.priority == "urgent"', "job.priority is never 'urgent' (its values: high, low, normal)"),
        ('job.spot != "require"', "job.spot is never 'require' (did you mean 'required'?)"),
        ('hardware.class == "3A090a"', "hardware.class is never '3A090a' (did you mean '3A090.a'?)"),
        ('tenant.kind in ["university", "startup"]', "tenant.kind is never 'startup'"),
        ('"cn" == tenant.entity_country', "tenant.entity_country is an ISO 3166 alpha-2 code in capitals"),
        ('offer.accelerator == "h800"', "offer.accelerator is never 'h800' (did you mean 'H800'?)"),
        ('hardware.name == "H10O"', "hardware.name is never 'H10O' (did you mean 'H100'?)"),
        ('site.residency == "cn-mainlnd"', "site.residency is never 'cn-mainlnd' (did you mean 'cn-"),
    ],
)
def test_a_value_the_field_never_takes_is_an_error(tmp_path: Path, expr: str, message: str) -> None:
    path = _with_rule(tmp_path, expr)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    (problem,) = err.value.problems
    assert problem.message.startswith(f"compliance.rules.0.deny: {message}"), problem.message
    line = path.read_text().splitlines()[problem.line - 1]
    assert line[problem.col - 1] in "\"'", (line, problem.col)  # at the value itself


@pytest.mark.parametrize(
    "expr",
    [
        'job.priority == "high" && hardware.class == "3A090.a" && tenant.entity_country == "CN"',
        'offer.accelerator == "H100" || hardware.name == "Ascend910B"',  # known, if not offered here
        'site.residency == "eu-gdpr"',  # a zone another policy declares: a shared rule, no near miss
        'site.adapter == "slurm"',
    ],
)
def test_values_the_field_may_take_load(tmp_path: Path, expr: str) -> None:
    load_policy(_with_rule(tmp_path, expr))
