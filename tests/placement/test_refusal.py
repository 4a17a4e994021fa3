"""What a refused job is told first: the rules that reject the offers its hardware fits, or its
misfit where it fits none. Placement stops at an offer's first failing rule and the export rule
runs before the hardware fit, so a 64-GPU H100 job was told first of the licence its tenant lacks
for the 1-GPU H100 instances, as if a licence would have let it run."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.burst import BurstInputs, decide
from broker.cli import main
from broker.decision import Action
from broker.policy import load_policy
from broker.policy.offers import static_offers
from tests.burst.test_decision import NOW, job

ROOT = Path(__file__).resolve().parents[2]


def _reasons(count: int) -> tuple[str, ...]:
    policy = load_policy(ROOT / "configs" / "policy-sim.yaml")
    d = decide(
        job(("H100",), count=count),
        "pku-nlp",  # a D:5 tenant: the export rule rejects US-operated H100 instances
        static_offers(policy, read_at=NOW),
        policy,
        BurstInputs(now=NOW, queued_since=NOW),
    )
    assert d.action == Action.REJECT
    return d.reasons


def test_a_job_no_offer_carries_is_told_so_first() -> None:
    reasons = _reasons(64)
    assert reasons[0].startswith("hardware.fit: "), reasons
    assert "needs 64" in reasons[0], reasons


def test_a_job_the_export_rule_refuses_is_told_that_first() -> None:
    reasons = _reasons(1)
    assert reasons[0].startswith("us-export-3a090: "), reasons


def test_a_rule_refusing_the_one_slice_a_job_fits_outranks_the_slices_it_does_not(tmp_path: Path) -> None:
    # The embedded default's A800 partition is offered in slices of 1, 2, 4 and 8 cards under one
    # offer key: a rule closing the pool refuses the 8-card slice, the smaller ones do not fit an
    # 8-GPU job, and the rule (not three misfits) is why the job is refused.
    text = (ROOT / "broker" / "defaults" / "policy.yaml").read_text() + (
        "  rules:\n"
        "    - id: no-a800\n"
        "      deny: 'offer.instance_type == \"a800\"'\n"
        "      reason: A800 pool closed for maintenance\n"
    )
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    offers = static_offers(policy, read_at=NOW)
    for count in (8, 4, 2):
        d = decide(job(("A800",), count=count), "dev", offers, policy, BurstInputs(now=NOW, queued_since=NOW))
        assert d.action == Action.REJECT
        assert d.reasons[0] == "no-a800: A800 pool closed for maintenance", (count, d.reasons)


def test_explains_headline_names_what_refuses_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`blocked by` named the commonest rule that is not a misfit: a rule closing only offers the
    job could not use anyway (a tenant's allowed sites, where no site has the model asked)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (ROOT / "broker" / "defaults" / "policy.yaml").read_text()
        + "  rules:\n    - id: no-a800\n      deny: 'offer.instance_type == \"a800\"'\n"
        "      reason: A800 pool closed for maintenance\n"
    )
    job_file = tmp_path / "job.yaml"
    job = "name: j\ncommand: [run]\nruntime_estimate: 1h\nresources: {accelerators: {count: %d}}\n"
    job_file.write_text(job % 8)
    assert main(["explain", str(job_file), "--policy", str(policy), "--tenant", "dev"]) == 1
    assert "blocked by [no-a800] A800 pool closed for maintenance" in capsys.readouterr().out
    job_file.write_text(job % 16)
    assert main(["explain", str(job_file), "--policy", str(policy), "--tenant", "dev"]) == 1
    assert "blocked by [hardware.fit] a800 has 8 x A800; the job needs 16" in capsys.readouterr().out


def test_offline_explain_refuses_what_submission_refuses_before_placement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `high` job of a tenant not granted it was explained as `decision: run`, though submitting
    it is refused (INVALID_ARGUMENT); an undeclared tenant got a whole table of `policy.tenant`."""
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: j\ncommand: [run]\nruntime_estimate: 1h\npriority: high\n")
    policy = str(ROOT / "configs" / "policy.yaml")
    assert main(["explain", str(job_file), "--policy", policy, "--tenant", "pku-nlp"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("szb: error: priority: tenant 'pku-nlp' is not granted priority 'high'"), err
    assert main(["explain", str(job_file), "--policy", policy, "--tenant", "pku-nl"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("szb: error: --tenant pku-nl: not in the policy (did you mean 'pku-nlp'?)"), err
