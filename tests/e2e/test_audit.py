"""The audit trail through a running `szb serve` and the CLI: policy versions and job events.

Observation 6 of issue 12: no record of policy versions or refused reloads (status kept
showing the old hash while the file on disk was invalid), nor of who submitted or cancelled.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from broker.policy import combined_hash, load_policy_text
from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import POLICY, TOKENS, auth, write_broker_config

OPERATOR = "token-operator-audit-0123456789"


def szb(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args, "--token", token],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR", "COLUMNS": "200"},
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hasher(folder: Path) -> Callable[[str], str]:
    """The policy hash of a text as `folder`/policy.yaml, with the files beside it as they are now
    (the hash covers them too); a refused file's hash is `sha` of its text alone."""
    inputs = load_policy_text(POLICY, str(folder / "policy.yaml")).inputs_digest
    return lambda text: combined_hash(sha(text), inputs)


def wait_for(check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_policy_versions_refused_reload_and_job_audit(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    ph = hasher(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    broker = BrokerProcess(config)
    broker.start(timeout=120)
    try:
        server = ("--server", broker.address)
        op = (("authorization", f"Bearer {OPERATOR}"),)
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            first = stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(), metadata=op)
            assert first.active_hash == ph(POLICY)
            assert [(v.hash, v.result, v.active) for v in first.versions] == [
                (ph(POLICY), pb.POLICY_LOAD_RESULT_LOADED, True)
            ]

            # Tenants may not read the audit trail, and are told what they asked for.
            history = "the policy history"
            for call, req, what in (
                (stub.ListPolicyVersions, pb.ListPolicyVersionsRequest(), history),
                (stub.GetPolicyVersion, pb.GetPolicyVersionRequest(hash=ph(POLICY)[:8]), history),
                (stub.ListAuditEvents, pb.ListAuditEventsRequest(), "the audit trail"),
            ):
                with pytest.raises(grpc.RpcError) as denied:
                    call(req, metadata=auth("team-a"))
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert denied.value.details() == f"only operators may read {what}"

            # An invalid policy on disk is refused, kept in the history, and shown by status.
            bad = POLICY.replace("price_hour: 14.0", "price_hour: -3")
            (tmp_path / "policy.yaml").write_text(bad)
            refused = wait_for(
                lambda: [
                    v
                    for v in stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(), metadata=op).versions
                    if v.result == pb.POLICY_LOAD_RESULT_REFUSED
                ]
            )
            assert refused[0].hash == sha(bad) and not refused[0].active
            assert any("policy.yaml:" in e and "price_hour" in e for e in refused[0].errors)
            status = stub.GetStatus(pb.GetStatusRequest(), metadata=op)
            assert status.policy_hash == ph(POLICY)
            assert status.refused_policy.hash == sha(bad) and status.refused_policy.errors
            shown = szb("status", *server, token=OPERATOR)
            assert shown.returncode == 0, shown.stderr
            assert "policy reload refused" in shown.stdout and sha(bad)[:12] in shown.stdout

            # A valid new version goes into force; the refusal is cleared from status.
            good = POLICY.replace("price_hour: 14.0", "price_hour: 15.0")
            (tmp_path / "policy.yaml").write_text(good)
            wait_for(
                lambda: stub.GetStatus(pb.GetStatusRequest(), metadata=op).policy_hash == ph(good)
            )
            assert not stub.GetStatus(pb.GetStatusRequest(), metadata=op).HasField("refused_policy")

            history = szb("policy", "history", *server, token=OPERATOR)
            assert history.returncode == 0, history.stderr
            for h in (ph(POLICY), sha(bad), ph(good)):
                assert h[:12] in history.stdout
            assert "refused" in history.stdout and "in force" in history.stdout
            text = szb("policy", "show", sha(bad)[:10], *server, token=OPERATOR)
            assert text.returncode == 0, text.stderr
            assert "price_hour: -3" in text.stdout and "refused" in text.stderr
            assert text.stdout == bad  # the file as stored (review: two header lines shifted its lines)
            old = szb("policy", "show", ph(POLICY)[:10], *server, "-o", "json", token=OPERATOR)
            assert json.loads(old.stdout)["version"]["content"] == POLICY
            missing = szb("policy", "show", "abcdef12", *server, token=OPERATOR)
            assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
            bad_hash = szb("policy", "show", "xyz", *server, token=OPERATOR)
            assert bad_hash.returncode == 1 and "hash" in bad_hash.stderr

            # Jobs: who submitted and cancelled, what was decided under which policy and price.
            ok = stub.SubmitJob(
                pb.SubmitJobRequest(
                    job=job_pb2.JobSpec(
                        name="audited",
                        command=["python3", "-c", "print(1)"],
                        runtime_estimate=duration_pb2.Duration(seconds=60),
                        resources=job_pb2.Resources(
                            accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A800"])
                        ),
                    )
                ),
                metadata=auth("team-a"),
            ).job
            waiting = stub.SubmitJob(
                pb.SubmitJobRequest(
                    job=job_pb2.JobSpec(
                        name="long-one",
                        command=["sleep", "60"],
                        runtime_estimate=duration_pb2.Duration(seconds=60),
                    )
                ),
                metadata=auth("team-b"),
            ).job
            stub.CancelJob(pb.CancelJobRequest(id=waiting.id), metadata=op)
            wait_for(
                lambda: stub.GetJob(pb.GetJobRequest(id=ok.id), metadata=auth("team-a")).job.state
                == job_pb2.JOB_STATE_SUCCEEDED
            )
    finally:
        broker.stop()
        (tmp_path / "policy.yaml").write_text(POLICY)
    # The history survives a restart (it is in the store).
    broker = BrokerProcess(config)
    broker.start(timeout=120)
    try:
        server = ("--server", broker.address)
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            op = (("authorization", f"Bearer {OPERATOR}"),)
            mine = stub.ListAuditEvents(pb.ListAuditEventsRequest(job_id=ok.id), metadata=op).events
            kinds = [e.kind for e in mine]
            assert kinds[0] == "submitted" and "placed" in kinds and kinds[-1] == "finished"
            assert mine[0].actor == "team-a" and mine[0].tenant == "team-a"
            assert mine[0].policy_hash == ph(good), "the policy that admitted it"
            placed = next(e for e in mine if e.kind == "placed")
            assert placed.policy_hash == ph(good) and placed.site == "local"
            assert placed.price_per_hour == 15.0 and placed.currency == "CNY"
            theirs = stub.ListAuditEvents(pb.ListAuditEventsRequest(tenant="team-b"), metadata=op).events
            assert {e.job_id for e in theirs if e.kind != "access"} == {waiting.id}  # (and its token)
            cancel = next(e for e in theirs if e.kind == "cancelled")
            assert cancel.actor == "alice" and cancel.policy_hash == ph(good)
            versions = stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(), metadata=op).versions
            assert versions[0].hash == ph(POLICY) and versions[0].active  # loaded again at start
            assert sha(bad) in {v.hash for v in versions}

        table = szb("audit", "--tenant", "team-b", "--since", "1h", *server, token=OPERATOR)
        assert table.returncode == 0, table.stderr
        assert waiting.id in table.stdout and "alice" in table.stdout and ok.id not in table.stdout
        as_json = szb("audit", "--job", ok.id, *server, "-o", "json", token=OPERATOR)
        events = json.loads(as_json.stdout)["events"]
        assert events[0]["kind"] == "submitted" and events[-1]["kind"] == "finished"
        future = szb("audit", "--since", "2999-01-01", *server, "-o", "json", token=OPERATOR)
        assert json.loads(future.stdout).get("events", []) == []
        tenant = szb("audit", *server, token=TOKENS["team-a"])
        assert tenant.returncode == 1 and "PERMISSION_DENIED" in tenant.stderr
        # A tenant the policy does not declare, with no events: a typo, not a quiet tenant.
        typo = szb("audit", "--tenant", "team-bb", *server, token=OPERATOR)
        assert typo.returncode == 1 and "NOT_FOUND" in typo.stderr, typo.stderr
        assert "'team-bb' is not in the policy" in typo.stderr and "did you mean 'team-" in typo.stderr
    finally:
        broker.stop()


def test_the_audit_trail_names_which_token_submitted_a_job(tmp_path: Path) -> None:
    """Two named tokens of one tenant: the trail tells bob's submits from carol's (and from a
    batch's), as it already did for cancels; before, every submit said only the tenant."""
    config = write_broker_config(tmp_path)
    bob, carol = "token-team-a-bob-0123456789", "token-team-a-carol-0123456789"
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
        f.write(token_entry_line("team-a", bob, Role.TENANT, "bob") + "\n")
        f.write(token_entry_line("team-a", carol, Role.TENANT, "carol") + "\n")
    broker = BrokerProcess(config)
    broker.start(timeout=120)
    spec = job_pb2.JobSpec(name="who", command=["true"], runtime_estimate=duration_pb2.Duration(seconds=60))
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            by_bob = stub.SubmitJob(
                pb.SubmitJobRequest(job=spec), metadata=(("authorization", f"Bearer {bob}"),)
            ).job.id
            batch = pb.SubmitJobsRequest(requests=[pb.SubmitJobRequest(job=spec)])
            by_carol = stub.SubmitJobs(batch, metadata=(("authorization", f"Bearer {carol}"),))
            unnamed = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a")).job.id
            trail = stub.ListAuditEvents(
                pb.ListAuditEventsRequest(tenant="team-a"),
                metadata=(("authorization", f"Bearer {OPERATOR}"),),
            ).events
    finally:
        broker.stop()
    submitted = {e.job_id: e.actor for e in trail if e.kind == "submitted"}
    assert submitted == {by_bob: "bob", by_carol.responses[0].job.id: "carol", unnamed: "team-a"}


def test_a_limit_that_cuts_the_trail_says_so(tmp_path: Path) -> None:
    """`szb audit` shows the newest --limit events (1000 by default) and `szb policy history`
    the newest 50 versions; a trail longer than that was cut without a word, so an operator
    reading `szb audit --since 1d` on a busy day took the newest thousand for the whole day."""
    config = write_broker_config(tmp_path)
    ph = hasher(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    broker = BrokerProcess(config)
    broker.start(timeout=120)
    spec = job_pb2.JobSpec(name="one", command=["true"], runtime_estimate=duration_pb2.Duration(seconds=60))
    try:
        server = ("--server", broker.address)
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a")).job
            op = (("authorization", f"Bearer {OPERATOR}"),)
            events = wait_for(
                lambda: [
                    e.kind
                    for e in stub.ListAuditEvents(
                        pb.ListAuditEventsRequest(job_id=job.id), metadata=op
                    ).events
                    if e.kind == "finished"
                ]
            )
            assert events
            (tmp_path / "policy.yaml").write_text(POLICY + "\n# edited\n")
            wait_for(
                lambda: len(stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(), metadata=op).versions) > 1
            )
        cut = szb("audit", "--job", job.id, "--limit", "2", *server, "-o", "json", token=OPERATOR)
        assert cut.returncode == 0, cut.stderr
        kinds = [e["kind"] for e in json.loads(cut.stdout)["events"]]
        assert len(kinds) == 2 and kinds[-1] == "finished", kinds  # the newest two
        assert "newest 2" in cut.stderr and "--limit" in cut.stderr, cut.stderr
        whole = szb("audit", "--job", job.id, *server, token=OPERATOR)
        assert whole.returncode == 0 and "--limit" not in whole.stderr, whole.stderr
        history = szb("policy", "history", "--limit", "1", *server, token=OPERATOR)
        assert history.returncode == 0, history.stderr
        assert "newest 1" in history.stderr and "--limit" in history.stderr, history.stderr
        assert ph(POLICY + "\n# edited\n")[:12] in history.stdout and ph(POLICY)[:12] not in history.stdout
        # Nothing matched: the key is still there (scripts index it), as an empty list.
        old = ("--until", "2000-01-01")
        none = szb("audit", "--tenant", "team-b", *old, *server, "-o", "json", token=OPERATOR)
        assert none.returncode == 0, none.stderr
        assert json.loads(none.stdout)["events"] == [], none.stdout
    finally:
        broker.stop()


def test_a_hash_prefix_two_versions_share_is_refused_as_ambiguous(tmp_path: Path) -> None:
    """Review: `szb policy show PREFIX` showed the loaded version though a refused one shared the
    prefix, with nothing said: a guess the operator cannot see."""
    config = write_broker_config(tmp_path)
    ph = hasher(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    prefix = ph(POLICY)[:4]
    twin = next(text for n in range(10**7) if ph(text := POLICY + f"# twin {n}\n")[:4] == prefix)
    broker = BrokerProcess(config)
    broker.start(timeout=120)
    try:
        server = ("--server", broker.address)
        (tmp_path / "policy.yaml").write_text(twin)
        deadline = time.monotonic() + 30
        while ph(twin)[:12] not in szb("policy", "history", *server, token=OPERATOR).stdout:
            assert time.monotonic() < deadline, "the twin policy was never loaded"
            time.sleep(0.2)
        shown = szb("policy", "show", prefix, *server, token=OPERATOR)
        assert shown.returncode == 1 and "give more digits" in shown.stderr, shown.stderr
        assert ph(POLICY)[:12] in shown.stderr and ph(twin)[:12] in shown.stderr
        exact = szb("policy", "show", ph(twin)[:12], *server, token=OPERATOR)
        assert exact.returncode == 0 and exact.stdout.rstrip("\n").endswith(twin.rstrip("\n")), exact.stderr
    finally:
        broker.stop()


def test_the_policy_history_says_which_load_is_in_force_and_keeps_catalog_edits(tmp_path: Path) -> None:
    """Held-out review (issue 12): a file mended back to the policy in force after a refusal was
    not recorded (the history read as if the refused file stayed on disk), every earlier entry of
    the hash in force was labelled in force, and an edit of a file the policy refers to (its
    catalog, accelerators, regimes), which changes decisions, left no entry at all."""
    config = write_broker_config(tmp_path)
    ph = hasher(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    broker = BrokerProcess(config)
    broker.start(timeout=120)
    op = (("authorization", f"Bearer {OPERATOR}"),)
    b_text = POLICY.replace("price_hour: 14.0", "price_hour: 15.0")
    bad = POLICY.replace("price_hour: 14.0", "price_hour: -3")
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

            def history() -> list[tuple[str, int, bool]]:
                got = stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(), metadata=op).versions
                return [(v.hash, v.result, v.active) for v in reversed(got)]  # oldest first

            loaded, refused = pb.POLICY_LOAD_RESULT_LOADED, pb.POLICY_LOAD_RESULT_REFUSED
            steps = [(b_text, loaded), (bad, refused), (b_text, loaded), (POLICY, loaded)]
            for n, (text, result) in enumerate(steps, 2):
                (tmp_path / "policy.yaml").write_text(text)
                wait_for(lambda n=n: len(history()) == n)
                assert history()[-1][:2] == (ph(text) if result == loaded else sha(text), result)
                if n == 4:  # (review: the mend was in the history, but the log kept only the error)
                    wait_for(lambda: "mended: the policy in force" in "".join(broker.output))
            accelerators = tmp_path / "accelerators.yaml"
            accelerators.write_text(accelerators.read_text() + "# an operator's note\n")
            after = hasher(tmp_path)  # the same policy file, with other accelerators: another hash
            wait_for(lambda: len(history()) == 6)
            assert history() == [
                (ph(POLICY), loaded, False), (ph(b_text), loaded, False), (sha(bad), refused, False),
                (ph(b_text), loaded, False), (ph(POLICY), loaded, False), (after(POLICY), loaded, True),
            ]
        # The same review: a job id no job has was an empty list (a typo read as a quiet job), and
        # a negative --limit was taken.
        server = ("--server", broker.address)
        typo = szb("audit", "--job", "j-no-such-job", *server, token=OPERATOR)
        assert typo.returncode == 1 and "NOT_FOUND" in typo.stderr and "j-no-such-job" in typo.stderr, typo
        negative = szb("audit", "--limit", "-3", *server, token=OPERATOR)
        assert negative.returncode == 2, negative.stderr
        assert "--limit: must be >= 0, got -3" in negative.stderr, negative.stderr
    finally:
        broker.stop()
