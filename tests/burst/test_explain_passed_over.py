"""`szb explain`'s offer table says why the decision passed over each allowed offer that scores
better than the decision's own (issue 15 review, review8's finding: spot offers the burst
decision refuses were listed as "allowed: -438.90 CNY vs the decision's offer" at their
uninterrupted score). Offline and on the typed wire form alike; the spot outlook of a decision
on spot travels with it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from broker.burst import decide
from broker.commands.explain import print_decision, print_table
from broker.decision import Action
from broker.model import JobSpec, TenantId
from broker.policy import Policy
from broker.serde import explanation_from_proto, explanation_to_proto
from broker.serde_decision import explain_json
from tests.brokerproc import ROOT
from tests.burst.test_decision import inputs, job, offers


def _wire(body: dict[str, object]) -> dict[str, object]:
    return explanation_from_proto(explanation_to_proto(body))


def _table(body: dict[str, object]) -> str:
    console = Console(width=400, record=True)
    print_table(body, job="j", limit=50, console=console)
    print_decision(body["decision"], console=console)  # type: ignore[arg-type]
    return console.export_text()


def _spot_row(body: dict[str, object]) -> dict[str, object]:
    return next(o for o in body["offers"] if o["allowed"] and o["spot"])  # type: ignore[attr-defined,index]


def test_the_readme_explain_line_says_why_each_cheaper_spot_offer_was_passed_over(tmp_path: Path) -> None:
    """review8's reproducer, with the README's offline line: a 133 h T4 job without checkpoints on
    configs/policy.yaml goes on demand; every cheaper spot offer is over the restart limit."""
    spec = tmp_path / "longspot.yaml"
    spec.write_text(
        "name: long-train\ncommand: [python, train.py]\nresources: {accelerators: {count: 1, any_of: [T4]}}\n"
        "runtime_estimate: 133h\nmax_wait: 0s\nspot: allowed\n"
    )
    run = [sys.executable, "-m", "broker.cli", "explain", str(spec), "--policy", "configs/policy.yaml",
           "--tenant", "pku-nlp"]
    body = json.loads(subprocess.run([*run, "-o", "json"], cwd=ROOT, capture_output=True, text=True).stdout)
    assert body["decision"]["burst"] and not body["chosen"]["spot"], body["decision"]
    better = [o for o in body["offers"][1:] if o["allowed"] and o["score"] < body["chosen"]["score"]]
    assert better and all(o["spot"] for o in better), better
    for o in better:
        why = o["passed_over"]
        assert why.startswith("spot expects ") and "(limit 3; checkpoint: none)" in why, o
    table = subprocess.run([*run, "--limit", "8"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "passed over: spot expects 771.8 restarts (limit 3; checkpoint: none)" in table, table
    assert "-438.90" not in table, table


def test_a_refusal_the_decision_records_names_the_offer_it_refused(policy: Policy) -> None:
    """Whatever the burst decision refused an offer for (here: no stock), explain shows that."""
    spec = job(("A10",), runtime="40h", max_wait="5m")
    d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=0), policy, inputs())
    assert d.offer is not None and not d.offer.spot  # over the restart limit: on demand
    spot_key = next(s.offer.key for s in d.explanation.offers if s.offer.spot)  # type: ignore[union-attr]
    d = replace(d, passed_over=((spot_key, f"{spot_key}: no stock"),))
    for body in (explain_json(d, spec, policy), _wire(explain_json(d, spec, policy))):
        assert _spot_row(body)["passed_over"] == "no stock", body
        assert "passed over: no stock" in _table(body)


def test_a_spot_offer_ranked_below_the_pick_by_its_interruptions_says_so(policy: Policy) -> None:
    """Under the restart limit (1.7 expected at 0.1/h for 10 h from zero), but 17.2 billed hours at
    13.00 cost more than 10 on demand at 13.90: the burst goes on demand, and explain says why."""
    spec = job(("A10",), runtime="10h", max_wait="5m")
    listed = offers(policy, free=0, wait_s=0)
    cheap = [o.model_copy(update={"price_per_hour": 13.0}) if o.spot else o for o in listed]
    d = decide(spec, TenantId("lab"), cheap, policy, inputs())
    assert d.action == Action.RUN and d.burst and d.offer is not None and not d.offer.spot, d.reasons
    for body in (explain_json(d, spec, policy), _wire(explain_json(d, spec, policy))):
        why = _spot_row(body)["passed_over"]
        assert why == (
            "spot expects 1.7 restarts (checkpoint: none): 17.2 billed h for 10.0 h of work cost more "
            "than the decision's offer"
        ), why


def test_a_worse_scored_spot_offer_over_the_restart_limit_is_not_called_allowed(policy: Policy) -> None:
    """Held-out review: a spot row over the limit read "allowed: +39.90 CNY vs the decision's offer"
    when it scored worse than the decision's (only better-scored rows were checked)."""
    spec = job(("A10",), runtime="40h", max_wait="5m")
    listed = offers(policy, free=0, wait_s=0)
    dear = [o.model_copy(update={"price_per_hour": 30.0}) if o.spot else o for o in listed]
    d = decide(spec, TenantId("lab"), dear, policy, inputs())
    assert d.offer is not None and not d.offer.spot, d.reasons
    for body in (explain_json(d, spec, policy), _wire(explain_json(d, spec, policy))):
        row = _spot_row(body)
        assert row["score"] > body["chosen"]["score"], body  # type: ignore[index,operator]
        assert str(row["passed_over"]).startswith("spot expects ") and "(limit 3; checkpoint: none)" in str(
            row["passed_over"]), row
        assert "allowed: +" not in _table(body)


def test_a_cloud_offer_passed_over_for_free_on_prem_capacity_gives_the_decisions_reason(
    policy: Policy,
) -> None:
    spec = job(("A800", "A10"), runtime="1h")
    d = decide(spec, TenantId("lab"), offers(policy, free=8, wait_s=0), policy, inputs())
    assert d.action == Action.RUN and not d.burst, d.reasons
    body = explain_json(d, spec, policy)
    better = [o for o in body["offers"][1:] if o["allowed"] and o["score"] < body["chosen"]["score"]]
    assert better, body["offers"]
    for o in better:
        assert o["passed_over"] == f"the decision: {d.reasons[0]}", o
    worse = [o for o in body["offers"][1:] if o["allowed"] and o["score"] >= body["chosen"]["score"]]
    assert all("passed_over" not in o for o in worse), worse


def test_the_spot_outlook_of_a_decision_on_spot_is_shown_and_travels(policy: Policy) -> None:
    spec = JobSpec.model_validate({**job(("A10",), runtime="4h", max_wait="5m").model_dump(),
                                   "checkpoint": {"interval": "30m"}})
    d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=0), policy, inputs())
    assert d.offer is not None and d.offer.spot, d.reasons
    local = explain_json(d, spec, policy)
    wire = _wire(local)
    assert wire["decision"]["spot_outlook"] == local["decision"]["spot_outlook"]  # type: ignore[index]
    outlook = local["decision"]["spot_outlook"]
    assert outlook["checkpoint_interval_s"] == 1800 and outlook["restart_limit"] == 3, outlook
    line = "spot outlook: 0.4 expected restarts (limit 3; checkpoint: 30m), 4.1 billed h for 4.0 h"
    assert line in _table(wire)
    assert "spot_outlook" not in explain_json(d)["decision"]  # without the job: not known


def test_the_wait_column_shows_the_projected_wait_the_decision_weighed(policy: Policy) -> None:
    """Live, the on-prem offer's own expected wait is the backend's; the decision waits on its
    projection (3 h here, bursting at the last responsible moment): the ticked row shows that."""
    spec = job(max_wait="1h")
    d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=0), policy,
               inputs(projected_wait={"onprem/a800": 3 * 3600.0}))
    assert d.action == Action.WAIT and d.facts.burst_in_s, d.reasons
    ticked = next(line for line in _table(_wire(explain_json(d, spec, policy))).splitlines() if "✔" in line)
    assert "onprem" in ticked and " 180m " in ticked, ticked


def test_the_decisions_own_refusal_reaches_the_table(policy: Policy) -> None:
    """The spot offer is out of stock: the burst decision skips it for on demand and records why
    (`Decision.passed_over`); explain shows that, not a guess from the spot outlook."""
    spec = job(("A10",), runtime="1h", max_wait="5m")
    listed = [o.model_copy(update={"free": 0}) if o.spot else o for o in offers(policy, free=0, wait_s=0)]
    d = decide(spec, TenantId("lab"), listed, policy, inputs())
    assert d.action == Action.RUN and d.burst and d.offer is not None and not d.offer.spot, d.reasons
    assert [why for _, why in d.passed_over] == [f"{_spot_key(d)}: no stock"], d.passed_over
    for body in (explain_json(d, spec, policy), _wire(explain_json(d, spec, policy))):
        assert _spot_row(body)["passed_over"] == "no stock", body


def _spot_key(d: object) -> str:
    return next(s.offer.key for s in d.explanation.offers if s.offer.spot)  # type: ignore[attr-defined]


def test_when_no_offer_is_usable_every_allowed_offer_says_why(tmp_path: Path) -> None:
    """`spot: required` over the restart limit: no offer is usable, and none ever will be, so the
    job is rejected (as submission refuses it); every allowed spot offer in the table says why."""
    spec = tmp_path / "required.yaml"
    spec.write_text(
        "name: long-train\ncommand: [python, train.py]\nresources: {accelerators: {count: 1, any_of: [T4]}}\n"
        "runtime_estimate: 133h\nmax_wait: 0s\nspot: required\n"
    )
    run = [sys.executable, "-m", "broker.cli", "explain", str(spec), "--policy", "configs/policy.yaml",
           "--tenant", "pku-nlp", "-o", "json"]
    body = json.loads(subprocess.run(run, cwd=ROOT, capture_output=True, text=True).stdout)
    assert body["decision"]["action"] == "reject" and body["chosen"] is None, body["decision"]
    allowed = [o for o in body["offers"] if o["allowed"]]
    assert len(allowed) > 5 and all(o["spot"] for o in allowed), allowed
    for o in allowed:
        assert "restarts (limit 3; checkpoint: none)" in o.get("passed_over", ""), o
