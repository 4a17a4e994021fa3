"""`szb serve --log-format json|text --log-level LEVEL`: structured lines, levels, redaction.

Observation 4 of issue 12: during a 40-job peak the broker logged six lines, all about startup.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.logs import REDACTED, JsonFormatter, TextFormatter, configure, redact, redact_credentials
from tests.brokerproc import ROOT
from tests.e2e.conftest import POLICY, TOKENS, auth, write_broker_config


class Serve:
    """`szb serve ARGS...` with its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", *args],
            cwd=ROOT,
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.port = 0
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                m = re.search(r"serving on port (\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        assert ready.wait(30), "\n".join(self.lines)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)

    def wait_for(self, pattern: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    yield write_broker_config(tmp_path)


def job(name: str, *argv: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(name=name, command=list(argv), runtime_estimate=duration_pb2.Duration(seconds=60))


def test_json_log_lines_carry_job_tenant_site_and_reloads(config: Path) -> None:
    serve = Serve("--config", str(config), "--listen", "127.0.0.1:0", "--log-format", "json")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            j = stub.SubmitJob(pb.SubmitJobRequest(job=job("logged", "true")), metadata=auth("team-a")).job
            serve.wait_for(
                rf'"job_id": "{j.id}".*"event": "attempt".*SUCCEEDED|SUCCEEDED.*"job_id": "{j.id}"'
            )
        (config.parent / "policy.yaml").write_text(POLICY.replace("price_hour: 14.0", "price_hour: -1"))
        serve.wait_for('"event": "reload"')
    finally:
        serve.stop()
    # A clean stop ends with a line saying so (review: the log just ended, as after a crash).
    assert json.loads(serve.wait_for('"event": "stopped"'))["level"] == "INFO"
    records = [json.loads(line) for line in serve.lines if line.startswith("{")]
    assert records, serve.lines
    # Every line is a JSON object, the readiness line on stdout too (it was plain text).
    assert all(line.startswith("{") for line in serve.lines), serve.lines
    ready = next(r for r in records if "serving on port" in r["message"])
    assert (ready["event"], ready["level"], ready["logger"]) == ("serving", "INFO", "szb"), ready
    assert ready["message"] == f"broker serving on port {serve.port}" and ready["time"], ready
    mine = [r for r in records if r.get("job_id") == j.id]
    assert {r["event"] for r in mine} >= {"placed", "attempt"}
    placed = next(r for r in mine if r["event"] == "placed")
    assert placed["tenant"] == "team-a" and placed["site"] == "local" and placed["policy_hash"]
    # An ended attempt's outcome is a field, not only words (review: a pipeline selecting failed
    # attempts had to parse the message).
    ended = next(r for r in mine if r["event"] == "attempt" and "ended" in r["message"])
    assert (ended["state"], ended["exit_code"]) == ("SUCCEEDED", 0), ended
    reload = next(r for r in records if r.get("event") == "reload")
    assert reload["level"] == "ERROR" and "refused" in reload["message"]
    assert reload["result"] == "refused"  # (held-out review: an alert had to match the words)
    problems = [r for r in records if "policy.yaml:" in r["message"] and "price_hour" in r["message"]]
    assert problems, records
    # Each error line of the refusal carries the fields its summary line does, so a query on
    # event=reload (or the refused file's hash) finds why, not only that.
    for r in problems:
        assert (r.get("event"), r.get("policy_hash"), r.get("source")) == (
            "reload", reload["policy_hash"], reload["source"]
        ), r
    for token in TOKENS.values():
        assert all(token not in line for line in serve.lines)


def test_a_submission_refused_for_want_of_an_allowed_offer_is_logged(config: Path) -> None:
    """A job no offer can ever take is refused at the door (FAILED_PRECONDITION) and never
    stored, so it leaves no event: the log line is all an operator has when the tenant asks why
    (eight A800 where a node has four; an export rule's refusal the same way)."""
    serve = Serve("--config", str(config), "--listen", "127.0.0.1:0", "--log-format", "json")
    big = job("eight-a800", "true")
    big.resources.accelerators.count = 8
    big.resources.accelerators.any_of.append("A800")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.SubmitJob(pb.SubmitJobRequest(job=big), metadata=auth("team-b"))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            line = serve.wait_for('"event": "rejected"')
    finally:
        serve.stop()
    record = json.loads(line)
    assert record["tenant"] == "team-b" and record["job_name"] == "eight-a800", record
    assert record["rules"] == ["hardware.fit"] and "hardware.fit" in record["message"], record
    assert record["policy_hash"] and "job_id" not in record, record


def test_a_cancel_is_logged_with_who_asked(config: Path) -> None:
    """A cancel stops work someone paid for: the log names the job, its tenant and who cancelled it,
    as it does for a refusal, not only the job's own events."""
    serve = Serve("--config", str(config), "--listen", "127.0.0.1:0", "--log-format", "json")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            j = stub.SubmitJob(
                pb.SubmitJobRequest(job=job("long", "sleep", "120")), metadata=auth("team-a")
            ).job
            serve.wait_for(rf'"job_id": "{j.id}".*"event": "placed"|"event": "placed".*"job_id": "{j.id}"')
            deadline = time.monotonic() + 30
            while stub.GetJob(pb.GetJobRequest(id=j.id), metadata=auth("team-a")).job.state != (
                job_pb2.JOB_STATE_RUNNING
            ):
                assert time.monotonic() < deadline, "the job never ran"
                time.sleep(0.1)
            stub.CancelJob(pb.CancelJobRequest(id=j.id), metadata=auth("team-a"))
            line = serve.wait_for('"event": "cancelled"')
            # The attempt the cancel ends gets its line too, as a polled end does (a review: none).
            ended = serve.wait_for(r'"message": "attempt 1 on local ended CANCELLED')
    finally:
        serve.stop()
    record = json.loads(line)
    assert record["job_id"] == j.id and record["tenant"] == "team-a", record
    assert record["by"] and record["by"] in record["message"], record
    attempt = json.loads(ended)
    assert (attempt["event"], attempt["job_id"], attempt["state"]) == ("attempt", j.id, "CANCELLED"), attempt


def test_text_format_and_log_level(config: Path) -> None:
    serve = Serve(
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "text",
        "--log-level",
        "WARNING",
        "--metrics-listen",
        "127.0.0.1:0",
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            j = stub.SubmitJob(
                pb.SubmitJobRequest(job=job("fails", "python3", "-c", "raise SystemExit(3)")),
                metadata=auth("team-b"),
            ).job
            line = serve.wait_for(rf"job_id={j.id}")
    finally:
        serve.stop()
    metrics = next(x for x in serve.lines if x.startswith("szb: metrics on http://127.0.0.1:"))
    assert not metrics.endswith(":0/metrics")  # --metrics-listen took a free port and said which
    assert f"szb: broker serving on port {serve.port}" in serve.lines  # plain text, the default format
    # WARNING and above only: the failed attempt is there, the INFO placement is not.
    assert (
        " WARNING " in line and "event=attempt" in line and "tenant=team-b" in line and "site=local" in line
    )
    assert not any(" INFO " in x for x in serve.lines), serve.lines
    assert not any("event=placed" in x for x in serve.lines)


def test_bad_log_level_is_a_usage_error(config: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), "--log-level", "LOUD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "--log-level" in out.stderr


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("authorization: Bearer tok-abc.def_123", "tok-abc.def_123"),
        # A token that starts with the word "token" (the plain word alone is no credential).
        ("sent Bearer token-team-a-0123456789", "team-a-0123456789"),
        ("sent bearer TOKEN.abc", "abc"),
        ("sent Bearer tokens_9f8e7d", "9f8e7d"),
        ("calling with token=9f8e7d6c5b4a", "9f8e7d6c5b4a"),
        ('{"agent_token": "0123456789abcdef"}', "0123456789abcdef"),
        ("dsn postgresql://broker:hunter2@db:5432/szb", "hunter2"),
        ("key AKIAIOSFODNN7EXAMPLE rejected", "AKIAIOSFODNN7EXAMPLE"),
        ("aliyun LTAI5tAbCdEfGhIjKlMn failed", "LTAI5tAbCdEfGhIjKlMn"),
        ("secret_access_key: wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG"),
        ("X-SLURM-USER-TOKEN: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb290In0.c2lnbmF0dXJl", "eyJhbGciOiJIUzI1NiJ9"),
        ("password=s3cret&user=x", "s3cret"),
        # A password with '/' or '@' in it (not percent-encoded, as people write them) is masked whole.
        ("dsn postgresql://szb:p/ss@db/szb", "p/ss"),
        ("dsn postgresql://szb:p@ss@db:5432/szb", "ss@db"),
        ("store postgresql://szb:hunter@2024@db", "2024"),
        # Keys whose letters run long before `token`/`secret` (the patterns no longer start a
        # match inside a run of letters, which made them quadratic).
        ("HF_TOKEN=hf_abcdef123", "hf_abcdef123"),
        ("AVERYLONGSERVICEACCOUNTNAMEFORTHEINTERNALAPI_TOKEN: t0ps3cr3t", "t0ps3cr3t"),
        ("MY_DB_SECRET_KEY=k3y", "k3y"),
        ("abc1token=x9y8z7", "x9y8z7"),
        # Unbounded secrets, as before the patterns were made linear (a review of that change:
        # bounds let long DSN passwords, spaced values and long JWTs through).
        ("postgresql://app:" + "p" * 300 + "Q@db.internal:5432/x", "p" * 300),
        ("Authorization: Bearer" + " " * 17 + "s3cr3tTOKENvalue", "s3cr3tTOKENvalue"),
        ("password =" + " " * 17 + "hunter2hunter2", "hunter2hunter2"),
        ("client_secret_for_the_production_environment_key=abc123SECRET", "abc123SECRET"),
        ("jwt eyJ" + "a" * 20 + "." + "b" * 9000 + ".sig", "b" * 9000),
        # A quoted value with a space was masked to its first word; `private_key=` not at all.
        ("password='hunter two' host=x", "two"),
        ('dsn password="a b c" user=x', "b c"),
        ("private_key=-----BEGIN", "BEGIN"),
    ],
)
def test_redact_masks_secrets(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and REDACTED in out


def test_redact_keeps_ordinary_text() -> None:
    text = "job j-1a2 placed on aws-east (g5.xlarge) attempt j-1a2-a1 at 1.006 USD/h"
    assert redact(text) == text
    url = "reached http://slurm:6820/slurm/v0.0.40/job/4@retry and https://host:443/a@b"
    assert redact(url) == url  # a port, not a password


def test_a_validation_message_about_a_secret_field_is_kept() -> None:
    """Held-out review: the tokens file's reload error read `tokens.3.secret: [REDACTED] field
    'secret'` in the log (`szb status` said `unknown field 'secret'`)."""
    for text in ("tokens.3.secret: unknown field 'secret'", "sites.aws.secret_key: must be a string"):
        assert redact(text) == text
    assert redact('{"agent_token": "0123456789abcdef"}') == '{"agent_token": "[REDACTED]"}'  # still JSON


def test_the_plain_word_token_after_bearer_is_kept() -> None:
    """The broker's own refusal lost its word "token" to the bearer mask ("missing bearer
    [REDACTED] in 'authorization' metadata"): the word alone is no credential."""
    for text in ("missing bearer token in 'authorization' metadata", "a bearer tokens file, Bearer token."):
        assert redact(text) == text and redact_credentials(text) == text


def test_formatters_redact_fields_and_messages() -> None:
    record = logging.LogRecord("broker.x", logging.INFO, __file__, 1, "using %s", ("Bearer abc123",), None)
    record.job_id = "j-1"
    record.error = "AuthError: access_key_id=AKIAIOSFODNN7EXAMPLE invalid"
    record.rules = ["us-export-3a090", "residency"]
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == f"using Bearer {REDACTED}" and data["job_id"] == "j-1"
    assert "AKIAIOSFODNN7EXAMPLE" not in data["error"] and data["rules"] == ["us-export-3a090", "residency"]
    text = TextFormatter().format(record)
    assert "abc123" not in text and "job_id=j-1" in text and "rules=us-export-3a090,residency" in text


def test_configure_routes_everything_through_one_handler() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("json", "DEBUG", stream)
        logging.getLogger("broker.test").debug("hello", extra={"site": "local"})
        logging.getLogger("credentials").error("noise from an SDK")  # quieted third party: warnings+
        line = json.loads(stream.getvalue().splitlines()[0])
        assert line["level"] == "DEBUG" and line["site"] == "local"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
