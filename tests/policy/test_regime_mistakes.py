"""Mistakes an operator can make in regimes.yaml: `szb policy check` names each at its FILE:LINE:COL.

Each of these files used to load, and quietly changed what the export rule refuses: a country group
member that is not an ISO code matches no tenant, a prong with no bound or a negative one matches
every accelerator, an empty range matches none, and a class named twice hides the second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[[list[str]], int]

POLICY = """\
version: 1
currency: CNY
sites:
  - id: onprem
    adapter: slurm
    country: CN
    residency: global
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14}
tenants:
  - {id: macau-lab, kind: institute, entity_country: MO}
"""

# (name, old text in the shipped regimes.yaml, new text, line, col, message substring)
MISTAKES = [
    ("alpha-3-member", '"Macau": [MO]', '"Macau": [MAC]', 48, 13, "country_groups.Macau.0: 'MAC' is not"),
    ("lower-case-member", '"D:5": [AF,', '"D:5": [af,', 47, 11, "country_groups.D:5.0: 'af' is not"),
    (
        "prong-without-bounds",
        "          - id: a.1\n            tpp: {min: 4800}\n",
        "          - id: a.1\n",
        29,
        13,
        "regimes.1.classes.0.prongs.0: a prong with no bound matches every accelerator",
    ),
    (
        "empty-range",
        "pd: {min: 1.6, max: 5.92}",
        "pd: {min: 5.92, max: 1.6}",
        38,
        13,
        "prongs.0.pd: min 5.92 is not below max 1.6",
    ),
    (
        "negative-bound",
        "tpp: {min: 4800}\n          - id: a.2",
        "tpp: {min: -4800}\n          - id: a.2",
        30,
        24,
        "min: input should be greater than or equal to 0",
    ),
    (
        "bool-bound",
        "tpp: {min: 1600}\n            pd: {min: 5.92}",
        "tpp: {min: true}\n            pd: {min: 5.92}",
        32,
        24,
        "tpp.min: must be a number, not true",
    ),
    (
        "duplicate-class",
        "      - class: 3A090.b\n",
        "      - class: 3A090.a\n",
        34,
        16,
        "regimes.1.classes.1.class: duplicate class '3A090.a' in regime us-ac-2023",
    ),
    # Held-out review: two prongs of one class with one id loaded (a reason naming it is ambiguous).
    (
        "duplicate-prong",
        "          - id: a.2\n",
        "          - id: a.1\n",
        31,
        17,
        "regimes.1.classes.0.prongs.1.id: duplicate prong 'a.1' in class 3A090.a of regime us-ac-2023",
    ),
]


@pytest.mark.parametrize(
    ("name", "old", "new", "line", "col", "message"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_a_regimes_file_mistake_is_an_error_at_its_line(
    cli: Cli,
    write_policy: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    name: str,
    old: str,
    new: str,
    line: int,
    col: int,
    message: str,
) -> None:
    path = write_policy(POLICY)
    regimes = path.parent / "regimes.yaml"
    text = regimes.read_text()
    assert text.count(old) >= 1, name
    regimes.write_text(text.replace(old, new, 1))
    assert cli(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{regimes}:{line}:{col}: error: " in err, err
    assert message in err, err
