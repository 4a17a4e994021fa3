"""A misspelt policy key names the field it most likely meant, as a job file's does, at any depth
(the top, a list item's model, a mapping's value): a policy is longer than a job file, and
`unknown field 'hysterisis'` alone sends the operator to the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import PolicyError, load_policy_text

POLICY = Path(__file__).resolve().parents[2] / "configs" / "policy.yaml"


@pytest.mark.parametrize(
    ("right", "wrong"),
    [("hysteresis:", "hysterisis:"), ("count_per_node:", "count_per_nodes:"), ("currency:", "curency:")],
)
def test_a_misspelt_key_suggests_the_field(right: str, wrong: str) -> None:
    text = POLICY.read_text(encoding="utf-8")
    assert right in text
    with pytest.raises(PolicyError) as err:
        load_policy_text(text.replace(right, wrong, 1), str(POLICY))
    said = [str(p) for p in err.value.problems if "unknown field" in str(p)]
    name = wrong.rstrip(":")
    assert said and said[0].endswith(f"unknown field {name!r} (did you mean {right.rstrip(':')!r}?)"), said
