"""A token acting for a tenant the policy does not declare is warned of at start and after each
tokens or policy reload: it authenticates, but every submit of it is refused (FAILED_PRECONDITION).
Found by a held-out review (the broker started without a word)."""

from __future__ import annotations

import time
from pathlib import Path

from broker.auth import hash_token
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, write_broker_config

TEAM_B = "  - {id: team-b, kind: institute, entity_country: CN}\n"


def _warning(broker: BrokerProcess, *words: str, after: int = 0, timeout: float = 30.0) -> str:
    """The first WARNING line from `after` on that names every word ("" when none comes in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in broker.output[after:]:  # (the log is read by a thread)
            if "WARNING" in line and all(w in line for w in words):
                return line
        time.sleep(0.1)
    return ""


def _entry(tenant: str, token: str, name: str = "", role: str = "tenant") -> str:
    extra = f", name: {name}" if name else ""
    return f"  - {{tenant: {tenant}, role: {role}, sha256: {hash_token(token)}{extra}}}\n"


def test_tokens_of_an_undeclared_tenant_are_warned_of_at_start_and_at_reloads(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(tokens.read_text() + _entry("pku-nlp", "tok-pku-0123456789", "alice")
                      + _entry("ops", "tok-ops-0123456789", "carol", role="operator"))
    broker = BrokerProcess(config)
    broker.start()
    try:
        line = _warning(broker, "pku-nlp", "alice")
        assert line and str(tokens) in line and "not declared" in line, broker.output[-20:]
        # A declared tenant is not named, nor an operator's (an undeclared `ops` is their usual form).
        assert "team-a" not in line and "carol" not in line, line
        # A tokens reload adding another undeclared tenant says so (the file is polled).
        mark = len(broker.output)
        tokens.write_text(tokens.read_text() + _entry("thu-cv", "tok-thu-0123456789", "bob"))
        line = _warning(broker, "thu-cv", "bob", after=mark)
        assert line and "pku-nlp" in line and str(tokens) in line, broker.output[mark:]
        # A policy reload that drops a tenant its tokens still name says so too.
        mark = len(broker.output)
        (tmp_path / "policy.yaml").write_text(POLICY.replace(TEAM_B, ""))
        line = _warning(broker, "team-b", after=mark)
        assert line and str(tokens) in line and "not declared" in line, broker.output[mark:]
    finally:
        broker.stop()
