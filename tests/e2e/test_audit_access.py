"""Who may call the broker is in the audit trail. Review: a tokens file edited to add an
operator, change a role or revoke a token took effect within a second and left no record but a
log line saying how many entries it had; `szb audit` now lists each change as kind `access`,
naming the token by 12 hex digits of its hash (never the token or its whole hash)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from broker.auth import Role, hash_token, token_entry_line
from tests.brokerproc import BrokerProcess, szb, write_broker_folder
from tests.e2e.conftest import POLICY, TOKENS

OPERATOR = "token-operator-access-0123456789"
BOB = "token-team-b-bob-0123456789"


def access(broker: BrokerProcess, *args: str) -> list[dict[str, Any]]:
    out = szb(broker, OPERATOR, "audit", *args, "-o", "json")
    assert out.returncode == 0, out.stderr
    return [e for e in json.loads(out.stdout)["events"] if e["kind"] == "access"]


def wait_for_access(broker: BrokerProcess, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while len(seen := access(broker)) < count:
        assert time.monotonic() < deadline, (seen, "".join(broker.output)[-3000:])
        time.sleep(0.3)
    return seen


def test_tokens_added_changed_and_revoked_are_audited(tmp_path: Path) -> None:
    config = write_broker_folder(tmp_path, POLICY, TOKENS)
    tokens = tmp_path / "tokens.yaml"
    with tokens.open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    first = tokens.read_text()
    broker = BrokerProcess(config)
    broker.start(timeout=120)
    try:
        start = wait_for_access(broker, 3)  # the file put in force at start: three tokens
        assert sorted(e["message"].split(" [")[0] for e in start) == [
            "token added: alice (operator of ops)",
            "token added: team-a (tenant of team-a)",
            "token added: team-b (tenant of team-b)",
        ]
        assert {e["actor"] for e in start} == {"tokens file"}
        # bob joins team-b; team-a's token becomes an operator's; team-b's own token is revoked.
        edited = first.replace(
            f"{{tenant: team-b, sha256: {hash_token(TOKENS['team-b'])}}}",
            token_entry_line("team-b", BOB, Role.TENANT, "bob").strip().removeprefix("- "),
        ).replace(
            f"{{tenant: team-a, sha256: {hash_token(TOKENS['team-a'])}}}",
            f"{{tenant: team-a, sha256: {hash_token(TOKENS['team-a'])}, role: operator, name: carol}}",
        )
        assert edited != first
        tokens.write_text(edited)
        seen = wait_for_access(broker, 6)
        changes = sorted(e["message"] for e in seen[3:])
        b_key = hash_token(TOKENS["team-b"])[:12]
        assert changes == sorted([
            f"token added: bob (tenant of team-b) [sha256:{hash_token(BOB)[:12]}]",
            f"token removed: team-b (tenant of team-b) [sha256:{b_key}]",
            f"token changed: team-a (tenant of team-a) [sha256:{hash_token(TOKENS['team-a'])[:12]}] is now "
            f"carol (operator of team-a) [sha256:{hash_token(TOKENS['team-a'])[:12]}]",
        ]), changes
        everything = json.dumps(seen)
        for secret in (OPERATOR, BOB, *TOKENS.values(), hash_token(BOB), hash_token(OPERATOR)):
            assert secret not in everything
        mine = access(broker, "--tenant", "team-b")
        assert len(mine) == 3 and all("team-b" in e["message"] for e in mine), mine
        # A broken file is refused (the last good one stays): nothing changed, nothing recorded.
        tokens.write_text(edited + "  - {tenant: [oops\n")
        time.sleep(3)
        assert len(access(broker)) == 6
        tokens.write_text(edited)
    finally:
        broker.stop()
    # A restart with the same file records nothing new.
    broker.start(timeout=120)
    try:
        time.sleep(1)
        assert len(access(broker)) == 6
    finally:
        broker.stop()
