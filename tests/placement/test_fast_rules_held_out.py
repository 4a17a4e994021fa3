"""Rules a held-out review wrote, where the fast rule path (native predicates, per-field memos,
classes of sites) decided otherwise than the CEL library (the plain path) or crashed: a macro
whose element errors before a decisive one, a macro variable named like a rule variable, a `//`
comment with an apostrophe, `offer["field"]`. Each is decided the same both ways, in both offer
orders (a memo keyed on too few fields answers by whichever offer came first)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext, forget_snapshots, place
from broker.policy import Policy, load_policy
from broker.policy.offers import static_offers

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def policy_with(tmp: Path, rule_id: str, effect: str, expr: str, default: str = "allow") -> Policy:
    """configs/policy.yaml with its rules replaced by one (written as a YAML block: comments and
    newlines kept)."""
    text = (CONFIGS / "policy.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(accelerators|regimes): (\w+\.yaml)", rf"\1: {CONFIGS}/\2", text)
    text = text.replace("file: catalog/", f"file: {CONFIGS}/catalog/")
    text = text.replace("  default: allow", f"  default: {default}")
    text = text[: text.index("  rules:\n")] + "  rules:\n"
    body = "\n".join(f"        {line}" for line in expr.splitlines())
    text += f"    - id: {rule_id}\n      {effect}: |-\n{body}\n      reason: '{rule_id} at {{site}}'\n"
    (tmp / "policy.yaml").write_text(text, encoding="utf-8")
    return load_policy(tmp / "policy.yaml")


def job(**fields: Any) -> JobSpec:
    spec: dict[str, Any] = {"name": "d", "command": ["run"], "runtime_estimate": "1h"}
    spec["resources"] = {"accelerators": {"count": 1, "any_of": fields.pop("any_of", [])}}
    return JobSpec.model_validate({**spec, **fields})


def verdicts(
    policy: Policy, spec: JobSpec, tenant: str, offers: list[Offer], *, fast: bool
) -> dict[str, Any]:
    """Offer key -> (allowed, rules that rejected it), decided cold."""
    policy.rules.fast = fast
    policy.rules.clear()
    forget_snapshots()
    try:
        expl = place(spec, TenantId(tenant), offers, policy, PlacementContext())
        return {s.offer.key: (s.allowed, sorted({r.rule for r in s.reasons})) for s in expl.offers}
    finally:
        policy.rules.fast = True


def decided(policy: Policy, spec: JobSpec, tenant: str, first_site: str) -> dict[str, Any]:
    """The plain path's verdicts, after checking the fast path gives the same in catalog order and
    with `first_site`'s offers first."""
    offers = static_offers(policy)
    plain = verdicts(policy, spec, tenant, offers, fast=False)
    for order in (offers, sorted(offers, key=lambda o: o.site != first_site)):
        assert verdicts(policy, spec, tenant, order, fast=True) == plain
    return plain


def by_site(got: dict[str, Any], site: str) -> set[Any]:
    """The verdicts on the site's offers the job's hardware request fits."""
    return {
        (allowed, tuple(rules))
        for key, (allowed, rules) in got.items()
        if key.startswith(site + "/") and "hardware.fit" not in rules
    }


def test_all_over_a_list_errors_at_an_erroring_element_before_a_false_one(tmp_path: Path) -> None:
    # A100 first: `a != "A800"` holds, `job.labels.tier` errors: CEL errors, the offer is denied to be safe.
    expr = 'job.accelerators.any_of.all(a, a != "A800" && job.labels.tier == "gold")'
    policy = policy_with(tmp_path, "r-all", "deny", expr)
    got = decided(policy, job(any_of=["A100", "A800"]), "pku-nlp", "shangzhuang-onprem")
    assert by_site(got, "shangzhuang-onprem") == {(False, ("r-all",))}


def test_exists_over_a_list_errors_at_an_erroring_element_before_a_true_one(tmp_path: Path) -> None:
    expr = 'job.accelerators.any_of.exists(a, a == "H100" || job.labels.tier == "gold")'
    policy = policy_with(tmp_path, "a-exists", "allow", expr, default="deny")
    got = decided(policy, job(any_of=["A100", "H100"]), "pku-nlp", "aliyun-cn-wulanchabu")
    assert {allowed for allowed, _ in got.values()} == {False}  # an allow rule that errors allows nothing
    flipped = decided(policy, job(any_of=["H100", "A100"]), "pku-nlp", "aliyun-cn-wulanchabu")
    assert any(allowed for allowed, _ in flipped.values())  # H100 first: true before the error


def test_a_macro_variable_named_site_hides_the_site_only_inside_its_macro(tmp_path: Path) -> None:
    expr = '!tenant.allowed_sites.exists(site, site == "aliyun-cn-beijing") && site.country == "CN"'
    policy = policy_with(tmp_path, "r-shadow", "deny", expr)
    for first in ("aliyun-ap-southeast-1", "shangzhuang-onprem"):
        got = decided(policy, job(), "sg-partner", first)
        assert by_site(got, "shangzhuang-onprem") == {(False, ("r-shadow",))}
        assert by_site(got, "aliyun-ap-southeast-1") == {(True, ())}


@pytest.mark.parametrize(
    "expr",
    [
        "// the tenant's licence does not cover US soil\nsite.country == \"US\"",
        'site.country == "US" // US only',
    ],
)
def test_a_comment_is_no_part_of_the_rule(tmp_path: Path, expr: str) -> None:
    policy = policy_with(tmp_path, "r-us", "deny", expr)
    for first in ("aws-us-east-1", "aliyun-ap-southeast-1"):
        got = decided(policy, job(any_of=["L4", "L20"]), "sg-partner", first)
        assert by_site(got, "aws-us-east-1") == {(False, ("r-us",))}
        assert by_site(got, "aliyun-ap-southeast-1") == {(True, ())}


def test_offer_read_with_brackets_decides_by_the_field(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, "r-spot", "deny", 'offer["spot"] && job.priority == "low"')
    got = decided(policy, job(priority="low"), "pku-nlp", "aliyun-cn-beijing")
    spot = {o.key for o in static_offers(policy) if o.spot}
    fits = {key: v for key, v in got.items() if "hardware.fit" not in v[1]}
    assert not any(a for key, (a, _) in fits.items() if key in spot)
    assert any("r-spot" in r for key, (_, r) in fits.items() if key in spot)
    assert not any("r-spot" in r for key, (_, r) in fits.items() if key not in spot)
    assert any(a for a, _ in fits.values())


def test_a_reason_names_the_zone_of_the_job_it_refuses(tmp_path: Path) -> None:
    # The rule reads no job field, so its verdict was kept for the next job with the first job's
    # message: a cn-mainland job was told "job data zone any".
    policy_with(tmp_path, "r-cn", "deny", 'site.id == "aliyun-cn-beijing"')
    path = tmp_path / "policy.yaml"
    path.write_text(path.read_text().replace("'r-cn at {site}'", "'zone {zone} refused at {site}'"))
    policy = load_policy(path)
    offers = static_offers(policy)
    policy.rules.clear()
    forget_snapshots()
    for zone in ("any", "cn-mainland"):
        expl = place(job(data_residency=zone), TenantId("pku-nlp"), offers, policy, PlacementContext())
        said = {r.message for s in expl.offers for r in s.reasons if r.rule == "r-cn"}
        assert said == {f"zone {zone} refused at aliyun-cn-beijing"}, said


@pytest.mark.parametrize(
    "expr",
    [
        'site.country == "US" && b"x" == b"x"',  # a bytes literal: `b` was an unknown variable
        "r'\\' != \"x\" && site.country == \"US\"",  # a raw string: its backslash escapes nothing
        'site.country == "US" && ["US"].exists (c, c == site.country)',  # a space before the macro's (
        '[{"region": 1}].exists(site, site.region == 1) && site.country == "US"',  # `site` an element
    ],
)
def test_valid_cel_the_library_takes_loads_and_decides_alike(tmp_path: Path, expr: str) -> None:
    """Diff review: each was refused at load (an unknown variable, or a literal of the wrong type
    for a field the macro's variable hides)."""
    policy = policy_with(tmp_path, "r-us", "deny", expr)
    got = decided(policy, job(any_of=["L4", "L20"]), "sg-partner", "aws-us-east-1")
    assert by_site(got, "aws-us-east-1") == {(False, ("r-us",))}
    assert by_site(got, "aliyun-ap-southeast-1") == {(True, ())}


def reasons_of(policy: Policy, spec: JobSpec, tenant: str, rule_id: str) -> set[str]:
    """Every message `rule_id` gave against the job's offers."""
    expl = place(spec, TenantId(tenant), static_offers(policy), policy, PlacementContext())
    return {r.message for s in expl.offers for r in s.reasons if r.rule == rule_id}


def test_a_deny_rule_returning_a_string_denies_and_says_so(tmp_path: Path) -> None:
    """Held-out review: a non-bool result counted as no match, so a deny rule failed open."""
    expr = "has(job.labels.restricted) ? job.labels.restricted : false"
    policy = policy_with(tmp_path, "r-str", "deny", expr)
    got = decided(policy, job(any_of=["T4"], labels={"restricted": "true"}), "pku-nlp", "aws-cn-north-1")
    assert by_site(got, "aws-cn-north-1") == {(False, ("r-str",))}
    said = reasons_of(policy, job(any_of=["T4"], labels={"restricted": "true"}), "pku-nlp", "r-str")
    assert said and all("non-bool" in m for m in said), said  # shown as [r-str] message
    unlabelled = decided(policy, job(any_of=["T4"]), "pku-nlp", "aws-cn-north-1")
    assert by_site(unlabelled, "aws-cn-north-1") == {(True, ())}


def test_a_deny_rule_returning_a_number_for_spot_offers_denies_them(tmp_path: Path) -> None:
    """Held-out review: `offer.spot ? 1 : false` never denied a spot offer."""
    policy = policy_with(tmp_path, "r-int", "deny", "offer.spot ? 1 : false")
    got = decided(policy, job(any_of=["T4", "A10"]), "pku-nlp", "aliyun-cn-beijing")
    spot = {o.key for o in static_offers(policy) if o.spot}
    fits = {key: v for key, v in got.items() if "hardware.fit" not in v[1]}
    assert spot & fits.keys()
    assert all(v == (False, ["r-int"]) for key, v in fits.items() if key in spot)
    assert any(a for key, (a, _) in fits.items() if key not in spot)


def test_an_allow_rule_returning_a_non_bool_allows_nothing(tmp_path: Path) -> None:
    """Held-out review: the allow side of a non-bool result (an error, so it allows nothing)."""
    expr = "has(job.labels.ok) ? job.labels.ok : false"
    policy = policy_with(tmp_path, "a-str", "allow", expr, default="deny")
    got = decided(policy, job(any_of=["T4"], labels={"ok": "true"}), "pku-nlp", "aws-cn-north-1")
    assert {allowed for allowed, _ in got.values()} == {False}
