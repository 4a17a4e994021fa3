"""`szb serve --listen` on a port another broker already serves is refused, not shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from broker.api import broker_service_pb2 as pb
from tests.brokerproc import ROOT, BrokerProcess, stub_for
from tests.e2e.conftest import auth, write_broker_config


def test_a_second_broker_on_a_busy_port_is_refused(tmp_path: Path) -> None:
    first = BrokerProcess(write_broker_config(tmp_path / "first"))
    first.start()
    try:
        # Another broker (its own store) started on the same address by mistake: sharing the
        # port would hand each client connection to either broker, so jobs would come and go.
        second = write_broker_config(tmp_path / "second")
        try:
            out = subprocess.run(
                [sys.executable, "-m", "broker.cli", "serve", "--config", str(second),
                 "--listen", first.address],
                cwd=ROOT, capture_output=True, text=True, timeout=30,
            )
            code, stderr = out.returncode, out.stderr
        except subprocess.TimeoutExpired as exc:  # it kept serving: stopped by the timeout
            code, stderr = None, str(exc.stderr)
        assert code == 1, f"the second broker served on {first.address}: {stderr}"
        assert first.address in stderr and "in use" in stderr, stderr
        with stub_for(first.address) as stub:  # the first broker keeps answering on its port
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth("team-a"), timeout=10)
    finally:
        first.stop()


def test_a_busy_agent_or_metrics_port_is_named_with_its_setting(tmp_path: Path) -> None:
    """The broker binds three ports; one of the other two in use stopped it with only
    'broker stopped: [Errno 98] Address already in use', so the operator had to guess which."""
    first = BrokerProcess(
        write_broker_config(tmp_path / "first"), extra_env={"SZB_METRICS_LISTEN": "127.0.0.1:0"}
    )
    first.start()
    try:
        metrics = next(line for line in first.output if "metrics on http://" in line).split(
            "metrics on http://"
        )[1]
        busy = metrics.split("/")[0]  # HOST:PORT the first broker's /metrics holds
        config = write_broker_config(tmp_path / "second")
        for setting, flag in (
            ("metrics_listen", "SZB_METRICS_LISTEN"),
            ("agent_http_listen", "SZB_AGENT_HTTP_LISTEN"),
        ):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "broker.cli",
                    "serve",
                    "--config",
                    str(config),
                    "--listen",
                    "127.0.0.1:0",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, flag: busy},
            )
            assert out.returncode == 1, out.stderr
            last = out.stderr.strip().splitlines()[-1]
            assert f"cannot listen on {busy} ({setting})" in last and "in use" in last, out.stderr
    finally:
        first.stop()


def test_a_malformed_address_or_log_setting_is_named_at_its_line(tmp_path: Path) -> None:
    """`metrics_listen: nonsense` started the adapters, bound the agent endpoint, then stopped
    the broker with `invalid literal for int()`; `log_format: xml` was told it "must be 1-63
    characters of [a-z0-9-]", and `log_level: info` was refused for its case."""
    cases = {
        "metrics_listen: nonsense": ("metrics_listen", "HOST:PORT"),
        "listen: 127.0.0.1:99999": ("listen", "0-65535"),
        "agent_http_listen: ':8080x'": ("agent_http_listen", "HOST:PORT"),
        "log_format: xml": ("log_format", "'text' or 'json'"),
        "log_level: LOUD": ("log_level", "'INFO'"),
    }
    for line, (field, said) in cases.items():
        config = tmp_path / "broker.yaml"
        config.write_text(f"data_dir: data\n{line}\n")
        out = subprocess.run(
            [sys.executable, "-m", "broker.cli", "serve", "--config", str(config)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0, (line, out.stdout)
        assert f"broker.yaml:2:1: {field}:" in out.stderr and said in out.stderr, (line, out.stderr)
        assert "Traceback" not in out.stderr and not (tmp_path / "data" / "broker.db").exists(), line
    from broker.config import BrokerConfig

    assert BrokerConfig.model_validate({"log_level": "info"}).log_level == "INFO"


def test_a_sigterm_says_it_stops_and_turns_health_to_not_serving_first(tmp_path: Path) -> None:
    """SIGTERM wrote no line, and health answered SERVING until the port closed: a balancer
    kept sending calls to a broker on its way out."""
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    broker.stop()
    assert broker.said("stopping: health checks now answer NOT_SERVING", timeout=5), broker.output[-5:]
