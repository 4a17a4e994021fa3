"""`szb policy check` on valid and broken files: exact FILE:LINE:COL and message."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
Cli = Callable[[list[str]], int]

BASE = """\
version: 1
currency: CNY
fx: {USD: 7.2}
sites:
  - id: onprem
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14}
  - id: aws-us
    adapter: aws
    country: US
    residency: global
    catalog: {file: catalog/aws_gpu_vms.csv, region: us-east-1, currency: USD}
tenants:
  - id: pku
    kind: university
    entity_country: CN
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
  rules:
    - id: r1
      deny: 'job.priority == "high" && offer.spot'
      reason: no spot for high priority
"""


def test_base_is_valid(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_policy(BASE)
    assert cli(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok: 2 sites, 1 tenants, 1 rules" in out
    assert out.count("\n") == 1


@pytest.mark.parametrize("shipped", ["policy.yaml", "policy-local.yaml"])
def test_shipped_policies_are_valid(cli: Cli, shipped: str) -> None:
    assert cli(["policy", "check", str(CONFIGS / shipped)]) == 0


# (name, old text, new text, line, col, message substring)
BROKEN = [
    ("yaml-syntax", "currency: CNY\n", "currency: [CNY\n", 3, 3, "YAML"),
    # (the parser stops lines after an unclosed bracket: the message says where it opened)
    ("yaml-unclosed", "fx: {USD: 7.2}\n", "fx: {USD: 7.2\n", 4, 6, "flow mapping begun at 3:5: expected ','"),
    ("duplicate-key", "currency: CNY\n", "currency: CNY\ncurrency: USD\n", 3, 1, "YAML"),
    ("wrong-version", "version: 1", "version: 2", 1, 10, "version: input should be 1"),
    ("bad-currency", "currency: CNY", "currency: yuan", 2, 11, "currency: string should match pattern"),
    ("unknown-top-field", "fx: {USD: 7.2}\n", "fx: {USD: 7.2}\nfoo: 1\n", 4, 1, "unknown field 'foo'"),
    ("missing-country", "    country: US\n", "", 11, 5, "sites.1.country: missing required field 'country'"),
    ("negative-fx", "fx: {USD: 7.2}", "fx: {USD: -1}", 3, 11, "fx.USD: input should be greater than 0"),
    # Held-out review: a rate for the policy's own currency rescaled every price in it (CNY: 2 doubled them).
    (
        "fx-own-currency",
        "fx: {USD: 7.2}",
        "fx: {USD: 7.2, CNY: 2}",
        3,
        21,
        "fx.CNY: a rate of 2 for CNY, the",
    ),
    (
        "zero-shadow-price",
        "price_hour: 14}",
        "price_hour: 0}",
        10,
        72,
        "price_hour: input should be greater than 0",
    ),
    (
        "duplicate-priority",
        "    entity_country: CN\n",
        "    entity_country: CN\n    share: {priorities: [low, high, high]}\n",
        20,
        37,
        "tenants.0.share.priorities.2: duplicate 'high' (first at tenants.0.share.priorities.1)",
    ),
    (
        "duplicate-partition",
        "      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14}\n",
        "      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14}\n" * 2,
        11,
        16,
        "sites.0.partitions.1.name: duplicate name 'a800' (first at sites.0.partitions.0)",
    ),
    ("duplicate-country", "countries: [CN]}", "countries: [CN, CN]}", 22, 43, "countries.1: duplicate 'CN'"),
    # A zone with no countries let any site claim it: a US site ran cn-mainland jobs.
    ("zone-empty", "countries: [CN]}", "countries: []}", 22, 13, "'cn-mainland' lists no countries"),
    ("zone-no-countries", "{countries: [CN]}", "{}", 22, 13, "'cn-mainland' lists no countries"),
    (
        "site-in-zone-without-countries",
        "countries: [CN]}",
        "countries: []}",
        8,
        16,
        "sites.0.residency: site country CN is not in zone 'cn-mainland' (it lists no countries)",
    ),
    (
        "us-site-claims-cn-mainland",
        "    residency: global\n",
        "    residency: cn-mainland\n",
        14,
        16,
        "sites.1.residency: site country US is not in zone 'cn-mainland' (CN)",
    ),
    ("duplicate-site", "  - id: aws-us\n", "  - id: onprem\n", 11, 9, "duplicate site id 'onprem'"),
    ("unknown-zone", "    residency: global\n", "    residency: eu\n", 14, 16, "unknown residency zone 'eu'"),
    (
        "unknown-accelerator",
        "accelerator: A800,",
        "accelerator: A8000,",
        10,
        35,
        "unknown accelerator 'A8000'",
    ),
    ("missing-catalog-file", "aws_gpu_vms.csv, region", "nope.csv, region", 15, 21, "file not found"),
    (
        "dangling-allowed-site",
        "    entity_country: CN\n",
        "    entity_country: CN\n    allowed_sites: [onprem, mars]\n",
        20,
        29,
        "unknown site 'mars'",
    ),
    (
        "cel-syntax",
        'job.priority == "high" && offer.spot',
        'job.priority == "high" &&',
        25,
        39,
        "CEL syntax error",
    ),
    ("cel-unknown-field", "offer.spot'", "offer.spotty'", 25, 46, "unknown field offer.spotty"),
    ("cel-unknown-variable", "job.priority ==", "jobb.priority ==", 25, 14, "unknown variable 'jobb'"),
    (
        "cel-wrong-type",
        'job.priority == "high" && offer.spot',
        'job.accelerators.count + "x" == 1',
        25,
        14,
        "type error",
    ),
    ("cel-not-bool", 'job.priority == "high" && offer.spot', "job.cpus", 25, 14, "must evaluate to a bool"),
    # CEL compares values of different types as unequal without an error, so these rules loaded
    # and silently never matched (the sample-value run cannot see it; nor one behind &&).
    (
        "cel-string-field-vs-number",
        'job.priority == "high" && offer.spot',
        "offer.instance_type == 800",
        25,
        14,
        "type error: offer.instance_type is a string, compared with an int",
    ),
    (
        "cel-bool-field-vs-string",
        'job.priority == "high" && offer.spot',
        'job.priority == "high" && offer.spot == "true"',
        25,
        40,
        "type error: offer.spot is a bool, compared with a string",
    ),
    (
        "cel-number-field-vs-string-behind-and",
        'job.priority == "high" && offer.spot',
        'job.priority == "high" && "2" < job.runtime_hours',
        25,
        40,
        "type error: job.runtime_hours is a double, compared with a string",
    ),
    # The regex error spanned five lines (a caret drawing): one problem, one line.
    (
        "cel-bad-regex",
        'job.priority == "high" && offer.spot',
        'job.name.matches("(")',
        25,
        14,
        "'(' not a valid regex: regex parse error: ( ^ error: unclosed group",
    ),
    (
        "rule-dangling-site",
        "      reason: no spot",
        "      sites: [onprem, moon]\n      reason: no spot",
        26,
        23,
        "unknown site 'moon'",
    ),
    (
        "rule-site-id-literal",
        "offer.spot'",
        'offer.spot && site.id == "nowhere"\'',
        25,
        54,
        "unknown site 'nowhere'",
    ),
    # Only `site.id == "x"` was checked: a list of sites or a != named a missing one unseen.
    (
        "rule-site-id-in-list",
        "offer.spot'",
        'offer.spot && site.id in ["onprem", "nowhere"]\'',
        25,
        76,
        "unknown site 'nowhere'",
    ),
    (
        "rule-tenant-id-not-equal",
        "offer.spot'",
        'offer.spot && tenant.id != "pku2"\'',
        25,
        54,
        "unknown tenant 'pku2'",
    ),
    (
        "rule-bad-placeholder",
        "reason: no spot for high priority",
        "reason: no spot at {sitee}",
        26,
        15,
        "unknown placeholder {sitee}",
    ),
    (
        "rule-both-effects",
        "      reason: no spot",
        "      allow: 'true'\n      reason: no spot",
        24,
        7,
        "exactly one of 'deny' or 'allow'",
    ),
    (
        "unknown-regime",
        "compliance:\n",
        "compliance:\n  regime: us-2099\n",
        21,
        11,
        "unknown regime 'us-2099'",
    ),
    (
        "bad-licence-class",
        "    entity_country: CN\n",
        "    entity_country: CN\n    export_licences: [3A999]\n",
        20,
        23,
        "unknown class '3A999'",
    ),
    (
        "bad-duration",
        "tenants:",
        "burst: {hysteresis: soon}\ntenants:",
        16,
        21,
        "burst.hysteresis: must be a duration",
    ),
    (
        "burst-dangling-site",
        "tenants:",
        "burst:\n  sites: {nowhere: {max_provisioning: 2}}\ntenants:",
        17,
        11,
        "burst.sites.nowhere: unknown site",
    ),
    (
        "bad-rank-chain",
        "fx: {USD: 7.2}\n",
        "fx: {USD: 7.2}\nobjective: {rank: [score, offer, site]}\n",
        4,
        34,
        "'site' is unreachable",
    ),
    ("no-fx-rate", "fx: {USD: 7.2}", "fx: {EUR: 7.9}", 15, 75, "no fx rate for USD"),
    # "USA" matched no site's operator country, so the export rule silently never applied
    # (a D:5 tenant got H100 at a US-operated site); country codes are ISO alpha-2 elsewhere.
    (
        "export-operator-country-not-iso",
        "  residency:\n",
        "  export: {operator_countries: [USA]}\n  residency:\n",
        21,
        33,
        "compliance.export.operator_countries.0: string should match pattern",
    ),
    (
        "residency-country-not-iso",
        "countries: [CN]",
        "countries: [CN, Macao]",
        22,
        43,
        "compliance.residency.zones.cn-mainland.countries.1: string should match pattern",
    ),
    # A zero window gave reclaim a zero waste budget: it silently never preempted.
    (
        "zero-reclaim-window",
        "tenants:",
        "fair_share: {reclaim: {window: 0s}}\ntenants:",
        16,
        32,
        "fair_share.reclaim.window: must be > 0 (to turn reclaim off, set fair_share.reclaim.enabled: false)",
    ),
    # The same zero waste budget through the share: reclaim would never preempt.
    (
        "zero-reclaim-share",
        "tenants:",
        "fair_share: {reclaim: {max_capacity_share: 0}}\ntenants:",
        16,
        44,
        "fair_share.reclaim.max_capacity_share: must be > 0 (to turn reclaim off, set "
        "fair_share.reclaim.enabled: false)",
    ),
    # No priority class granted: every job the tenant submits would be refused.
    (
        "empty-priorities",
        "    entity_country: CN\n",
        "    entity_country: CN\n    share: {priorities: []}\n",
        20,
        13,
        "tenants.0.share.priorities: must grant one priority class or more",
    ),
    (
        "empty-default-priorities",
        "tenants:",
        "fair_share: {defaults: {priorities: []}}\ntenants:",
        16,
        25,
        "fair_share.defaults.priorities: must grant one priority class or more",
    ),
    # YAML's .nan and .inf are floats: a NaN preference made every score NaN (the dispatcher's
    # pick then raised), an infinite fx rate priced every foreign offer at inf.
    (
        "nan-shadow-price",
        "price_hour: 14}",
        "price_hour: .nan}",
        10,
        72,
        "price_hour: input should be a finite number",
    ),
    ("inf-fx", "fx: {USD: 7.2}", "fx: {USD: .inf}", 3, 11, "fx.USD: input should be a finite number"),
    (
        "nan-preference",
        "    residency: global\n",
        "    residency: global\n    preference_per_hour: .nan\n",
        15,
        26,
        "preference_per_hour: input should be a finite number",
    ),
    (
        "minus-inf-preference",
        "    residency: global\n",
        "    residency: global\n    preference_per_hour: -.inf\n",
        15,
        26,
        "preference_per_hour: input should be a finite number",
    ),
    (
        "inf-wait-cost",
        "fx: {USD: 7.2}\n",
        "fx: {USD: 7.2}\nobjective: {wait_hour_cost: .inf}\n",
        4,
        29,
        "finite number",
    ),
    # A tenant's Slurm jobs as root could read and signal every other tenant's.
    (
        "root-batch-user",
        "    entity_country: CN\n",
        "    entity_country: CN\n    batch: {user: root}\n",
        20,
        19,
        "tenants.0.batch.user: a tenant's jobs never run as root",
    ),
    (
        "bad-batch-user",
        "    entity_country: CN\n",
        "    entity_country: CN\n    batch: {user: 'a b'}\n",
        20,
        19,
        "batch.user: string should match pattern",
    ),
    (
        # ruamel's bare ValueError for a date that is not one was reported at 1:1.
        "impossible-voucher-expiry",
        "    entity_country: CN\n",
        "    entity_country: CN\n    vouchers: [{id: v, balance: 10, discount: 0.5, expires: 2027-02-30}]\n",
        20,
        61,
        "'2027-02-30' is not a valid date or time: day is out of range for month",
    ),
    # Held-out review: a site's region, its catalog's and its adapter's disagreed without a word
    # (a cn-mainland job got the rows of another region; the adapter would launch in its own region).
    (
        "catalog-region-not-the-sites",
        "    residency: global\n    catalog: {file: catalog/aws_gpu_vms.csv, region: us-east-1,",
        "    residency: global\n    region: us-east-1\n    catalog: {file: catalog/aws_gpu_vms.csv, "
        "region: ap-northeast-1,",
        16,
        54,
        "sites.1.catalog.region: ap-northeast-1 is not the site's region us-east-1",
    ),
    (
        "adapter-region-not-the-sites",
        "    residency: global\n",
        "    residency: global\n    region: us-east-1\n    adapter_config: {region: us-west-2}\n",
        16,
        30,
        "sites.1.adapter_config.region: us-west-2 is not the site's region us-east-1",
    ),
    (
        "adapter-region-not-the-catalogs",
        "    residency: global\n",
        "    residency: global\n    adapter_config: {region_id: us-west-2}\n",
        15,
        33,
        "sites.1.adapter_config.region_id: us-west-2 is not the site's catalog region us-east-1",
    ),
    # Held-out review: a bad value under a YAML merge key (`<<:`) crashed check with a KeyError.
    (
        "merged-bad-value",
        "    residency: global\n",
        "    residency: global\n    <<: {carbon_gco2_kwh: -1}\n",
        15,
        27,
        "sites.1.carbon_gco2_kwh: input should be greater than or equal to 0",
    ),
    (
        "merged-unknown-field",
        "    residency: global\n",
        "    residency: global\n    <<: {colour: red}\n",
        15,
        10,
        "sites.1.colour: unknown field 'colour'",
    ),
    (
        "merged-bad-rule",
        "    - id: r1\n      deny: 'job.priority == \"high\" && offer.spot'\n",
        "    - <<: {id: r1, deny: 'offer.spotty'}\n",
        24,
        33,
        "compliance.rules.0.deny: unknown field offer.spotty",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "col", "message"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_broken_policy(
    cli: Cli,
    write_policy: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    line: int,
    col: int,
    message: str,
) -> None:
    assert old in BASE
    path = write_policy(BASE.replace(old, new, 1))
    assert cli(["policy", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    prefix = f"{path}:{line}:{col}: error: "
    matching = [x for x in lines if x.startswith(prefix)]
    assert matching, f"no error at {line}:{col}; got:\n{captured.err}"
    assert any(message.lower() in x.lower() for x in matching), captured.err
    assert all(x.startswith(f"{path}:") and ": error: " in x for x in lines)


def test_every_problem_is_reported(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace("residency: global", "residency: eu").replace("accelerator: A800,", "accelerator: X,")
    assert cli(["policy", "check", str(write_policy(text))]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_a_broken_only_site_is_one_error_not_also_an_empty_site_list(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """pydantic drops an invalid item before checking a tuple's length, so a policy whose one
    site had a bad price also got 'sites: tuple should have at least 1 item after validation,
    not 0', an error about a list that is not empty (in szb policy check, the refused reload's
    log, szb status and szb policy history alike)."""
    start, end = BASE.index("  - id: aws-us"), BASE.index("tenants:")
    one_site = BASE[:start] + BASE[end:]
    assert cli(["policy", "check", str(write_policy(one_site))]) == 0
    capsys.readouterr()
    path = write_policy(one_site.replace("price_hour: 14}", "price_hour: 0}"))
    assert cli(["policy", "check", str(path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"{path}:10:72: error: sites.0.partitions.0.price_hour: input should be greater than 0"]


def test_broken_referenced_catalog_reports_its_own_file(
    cli: Cli, policy_dir: Path, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    acc = policy_dir / "accelerators.yaml"
    acc.write_text(acc.read_text().replace("dense_tops: {fp16: 65, int8: 130}", "dense_tops: {fp12: 65}"))
    assert cli(["policy", "check", str(write_policy(BASE))]) == 1
    err = capsys.readouterr().err
    assert f"{acc}:" in err and "unknown precision 'fp12'" in err


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("dense_tops: {fp16: 1e308}", "1e+308 dense TOPS is beyond any accelerator"),
        ("die_area_mm2: 1e-300", "die_area_mm2: input should be greater"),
    ],
)
def test_an_absurd_accelerator_figure_is_an_error_at_load_not_a_crash_later(
    cli: Cli, policy_dir: Path, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str],
    spec: str, said: str,
) -> None:
    """Found by a held-out review: `dense_tops: {fp16: 1e308}` passed `policy check`, then `szb explain`
    and `szb hardware classify` died with OverflowError."""
    acc = policy_dir / "accelerators.yaml"
    text = acc.read_text()
    changed = re.sub(r"dense_tops: \{fp16: 65, int8: 130\}" if "tops" in spec else r"die_area_mm2: [0-9.]+",
                     spec, text, count=1)
    assert changed != text
    acc.write_text(changed)
    assert cli(["policy", "check", str(write_policy(BASE))]) == 1
    err = capsys.readouterr().err
    assert f"{acc}:" in err and said in err and "Traceback" not in err, err


def test_schema_is_json_schema(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert cli(["policy", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["type"] == "object"
    assert {"sites", "tenants", "burst", "compliance", "currency"} <= set(schema["properties"])


def test_sites_that_can_never_offer_are_warned_about(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A new site with zero catalog rows no longer passes silently."""
    text = BASE.replace("region: us-east-1, currency: USD}", "region: xx-nowhere-1, currency: USD}")
    path = write_policy(text + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", str(path)]) == 0  # warnings, not errors
    captured = capsys.readouterr()
    assert "1 warning(s)" in captured.out, captured
    lines = captured.err.splitlines()
    assert any(
        line.startswith(
            f"{path}:15:5: warning: sites[1] (aws-us): catalog catalog/aws_gpu_vms.csv has no priced "
            "rows for region xx-nowhere-1"
        )
        for line in lines
    ), lines
    assert cli(["policy", "check", "--strict", str(path)]) == 1


def test_a_policy_that_can_burst_with_free_waiting_is_warned_about(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """With waiting unpriced, max_wait never makes a job burst to a dearer cloud: say so."""
    path = write_policy(BASE)  # on-prem and a cloud site, no objective: wait_hour_cost 0
    assert cli(["policy", "check", str(path)]) == 0
    captured = capsys.readouterr()
    assert "1 warning(s)" in captured.out, captured
    warned = f"{path}:1:1: warning: objective.wait_hour_cost is 0: waiting and lateness cost nothing"
    assert warned in captured.err
    end = len(BASE.splitlines()) + 1
    path = write_policy(BASE + "objective: {price: 1, wait_hour_cost: 0}\n")
    assert cli(["policy", "check", "--strict", str(path)]) == 1
    assert f"{path}:{end}:39: warning: objective.wait_hour_cost is 0" in capsys.readouterr().err
    path = write_policy(BASE + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", "--strict", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_site_burst_max_idle_is_warned_to_have_no_effect(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The broker stops each instance when its job ends and never reuses one: max_idle limits nothing."""
    head = BASE + "objective: {wait_hour_cost: 40}\nburst:\n  sites:\n"
    text = head + "    aws-us: {max_provisioning: 2, max_idle: 5m}\n"
    path = write_policy(text)
    assert cli(["policy", "check", str(path)]) == 0
    err = capsys.readouterr().err
    line = len(text.splitlines())
    assert f"{path}:{line}:45: warning: burst.sites.aws-us.max_idle has no effect" in err, err
    path = write_policy(head + "    aws-us: {max_provisioning: 2}\n")
    assert cli(["policy", "check", "--strict", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_rule_reading_a_job_label_it_does_not_test_for_is_warned_about(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A job without the label makes the rule fail, and a failing rule denies to be safe: a rule
    meant for team x refused every job with no `team` label, on every offer it covers."""
    rule = """\
    - id: team-x
      deny: 'job.labels.team == "x" && site.operator_country == "US"'
      reason: team x stays out of US-operated sites
    - id: has-guard
      deny: 'has(job.labels.proj) && job.labels.proj == "y"'
      reason: guarded
    - id: in-guard
      deny: '"cc" in job.labels && job.labels["cc"] == "z"'
      reason: guarded
"""
    path = write_policy(BASE + rule + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", str(path)]) == 0
    err = capsys.readouterr().err
    deny = len(BASE.splitlines()) + 2
    assert (
        f"{path}:{deny}:13: warning: compliance.rules[1] (team-x) reads job.labels.team without "
        "has(job.labels.team): for a job without that label the rule cannot be evaluated, and such a "
        "rule denies, to be safe"
    ) in err, err
    assert "(has-guard)" not in err and "(in-guard)" not in err, err


def test_a_rule_testing_a_flag_no_accelerator_has_is_warned_about(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A flag misspelt on either side (the rule or accelerators.yaml) turns the rule off silently."""
    rule = """\
    - id: h20
      deny: >-
        "h20-is-informd-2025" in hardware.flags && site.operator_country == "US"
      reason: H20 needs a licence
    - id: gp10
      deny: 'hardware.flags.exists(f, f == "prc-3a090-gp10") && tenant.entity_country == "US"'
      reason: PRC 3A090 IC
"""
    path = write_policy(BASE + rule + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", str(path)]) == 0
    err = capsys.readouterr().err
    deny = len(BASE.splitlines()) + 2
    assert (
        f"{path}:{deny}:13: warning: compliance.rules[1] (h20) tests flag 'h20-is-informd-2025', "
        "which no accelerator has: the rule never matches (did you mean 'h20-is-informed-2025'?)"
    ) in err, err
    assert "gp10) tests flag" not in err, err
    # The same rule spelt right, with the flag misspelt in accelerators.yaml instead.
    accelerators = path.parent / "accelerators.yaml"
    accelerators.write_text(accelerators.read_text().replace("h20-is-informed-2025", "h20-is-informd-2025"))
    path = write_policy(BASE + rule.replace("informd", "informed") + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", "--strict", str(path)]) == 1
    assert "tests flag 'h20-is-informed-2025', which no accelerator has" in capsys.readouterr().err


def test_an_accelerator_accelerators_yaml_does_not_describe_reads_as_above_every_tpp(
    cli: Cli,
    policy_dir: Path,
    write_policy: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Held-out review: an unknown part read hardware.tpp 0, so `hardware.tpp >= 4800` denied H100 and
    let MI300X through; it is now as conservative as its PD, and check warns of the part."""
    import json

    rows = "x.mi300,MI300X,8,96,1024,50,,us-east-1,use1-az1\nx.h100,H100,8,96,1024,90,,us-east-1,use1-az1\n"
    header = (CONFIGS / "catalog" / "aws_gpu_vms.csv").read_text().splitlines()[0]
    (policy_dir / "catalog" / "extra.csv").write_text(header + "\n" + rows)
    rule = (
        "    - id: big\n      deny: 'hardware.tpp >= 4800'\n      reason: '{accelerator} is above TPP 4800'\n"
    )
    text = BASE.replace("catalog/aws_gpu_vms.csv", "catalog/extra.csv").replace(
        "country: CN\ncomp", "country: SG\ncomp"
    )
    text += rule
    path = write_policy(text + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", str(path)]) == 0
    captured = capsys.readouterr()
    assert "1 warning(s)" in captured.out, captured
    assert (
        f"{path}:15:5: warning: sites[1] (aws-us): catalog catalog/extra.csv sells MI300X, which "
        "accelerators.yaml does not describe"
    ) in captured.err, captured.err
    assert cli(["policy", "check", "--strict", str(path)]) == 1
    capsys.readouterr()
    job = policy_dir / "job.yaml"
    job.write_text(
        "name: j\ncommand: [run]\nruntime_estimate: 2h\n"
        "resources: {accelerators: {count: 8, any_of: [MI300X, H100]}}\n"
    )
    assert cli(["explain", str(job), "--policy", str(path), "--tenant", "pku", "--output", "json"]) == 1
    offers = json.loads(capsys.readouterr().out)["offers"]
    cloud = {o["accelerator"]: [r["rule"] for r in o["reasons"]] for o in offers if o["site"] == "aws-us"}
    assert cloud == {"MI300X": ["big"], "H100": ["big"]}, cloud


@pytest.mark.parametrize(
    ("name", "old", "line"),
    [
        ("catalog/aws_gpu_vms.csv", b"g5.xlarge,A10G,1.0,4.0,16.0,1.237", 4),
        ("accelerators.yaml", b"dense_tops: {fp16: 65, int8: 130}", None),
        ("regimes.yaml", b"regimes:", None),
    ],
)
def test_a_referenced_file_that_is_not_utf8_is_an_error_at_its_line(
    cli: Cli,
    policy_dir: Path,
    write_policy: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    name: str,
    old: bytes,
    line: int | None,
) -> None:
    """Held-out review: a byte that is not UTF-8 in a catalog, accelerators.yaml or regimes.yaml was a
    UnicodeDecodeError traceback naming no file."""
    path = policy_dir / name
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, b"\xff" + old, 1))
    line = line or data[: data.index(old)].count(b"\n") + 1
    assert cli(["policy", "check", str(write_policy(BASE))]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line}:1: error: " in err and "is not UTF-8" in err, err
    if name != "catalog/aws_gpu_vms.csv":  # `szb hardware classify` reads the same two files
        catalog, regimes = policy_dir / "accelerators.yaml", policy_dir / "regimes.yaml"
        assert cli(["hardware", "classify", "--catalog", str(catalog), "--regimes", str(regimes)]) == 1
        assert f"{path}:{line}:1: error: " in capsys.readouterr().err


def test_a_rate_of_exactly_1_for_the_policys_own_currency_is_allowed(
    cli: Cli, write_policy: Callable[[str], Path]
) -> None:
    """Held-out review (fx for the policy's own currency): 1 changes nothing, so it still loads."""
    assert (
        cli(["policy", "check", str(write_policy(BASE.replace("fx: {USD: 7.2}", "fx: {USD: 7.2, CNY: 1}")))])
        == 0
    )


def test_country_groups_that_leave_out_the_countrys_own_groups_are_warned_about(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a held-out review: a CN tenant given `country_groups: [D:1]` silently lost D:5 (and
    with it the export rules for D:5), and got H100s at a US site; nothing said so."""
    text = BASE.replace("    entity_country: CN\n", "    entity_country: CN\n    country_groups: [D:1]\n", 1)
    assert text != BASE
    path = write_policy(text + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", str(path)]) == 0
    err = capsys.readouterr().err
    line = text.splitlines().index("    country_groups: [D:1]") + 1
    assert f"{path}:{line}:5: warning: tenants[0] (pku): country_groups replaces the groups of " in err, err
    assert "leaving out D:4, D:5" in err, err
    # Listing them all is no mistake: nothing to say.
    path = write_policy(text.replace("[D:1]", "[D:1, D:4, D:5]") + "objective: {wait_hour_cost: 40}\n")
    assert cli(["policy", "check", str(path)]) == 0
    assert "country_groups replaces" not in capsys.readouterr().err
