"""`szb token --append FILE` adds the entry to a tokens file in its own layout, and the broker's
loader reads the result. Found by a held-out review: the README allows `tokens:` and a bare list,
but the entry `szb token` prints is indented two spaces, so `>>` onto a bare list at column 0
broke the file (`bare.yaml:2:3: error: YAML: ... expected <block end>`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from broker.auth import Role, TokenAuthority, hash_token
from tests.brokerproc import ROOT

ALICE_TOKEN = "token-of-alice-0123456789"
ALICE = f"{{tenant: team-a, role: tenant, sha256: \"{hash_token(ALICE_TOKEN)}\", name: alice}}"
LAYOUTS = {
    "bare list": f"- {ALICE}\n",
    "bare list, indented": f"  - {ALICE}\n",
    "under tokens:": f"# the team's tokens\ntokens:\n  - {ALICE}\n",
    "under tokens:, not indented": f"tokens:\n- {ALICE}\n",
    "no newline at the end": f"tokens:\n    - {ALICE}",
    "comments only": "# no tokens yet\n",
}


def szb_token(*args: str) -> subprocess.CompletedProcess[str]:
    """`szb token ARGS` as an operator types it."""
    return subprocess.run([sys.executable, "-m", "broker.cli", "token", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def appended_bob(tokens: Path) -> str:
    """A new operator token for bob appended to `tokens` by `szb token --append`; the token."""
    done = szb_token("--tenant", "ops", "--role", "operator", "--name", "bob", "--append", str(tokens))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    found = re.search(r"store it nowhere else\): (\S+)", done.stderr)
    assert found is not None and f"appended to {tokens}" in done.stderr, done.stderr
    return found.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_entry_appended_to_each_layout_is_read_by_the_broker(layout: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(LAYOUTS[layout])
    token = appended_bob(tokens)
    assert tokens.read_text().startswith(LAYOUTS[layout])  # (what was there is kept as it was)
    authority = TokenAuthority.from_file(tokens)
    bob = authority.principal_for(bearer(token))
    assert (bob.tenant, bob.role, bob.name) == ("ops", Role.OPERATOR, "bob")
    if layout != "comments only":
        assert authority.principal_for(bearer(ALICE_TOKEN)).name == "alice"


def test_a_missing_tokens_file_is_made_for_its_owner_only(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    token = appended_bob(tokens)
    assert tokens.stat().st_mode & 0o777 == 0o600
    assert TokenAuthority.from_file(tokens).principal_for(bearer(token)).name == "bob"


def test_a_file_it_cannot_append_to_is_left_unchanged(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    for text, said in [
        ("tokens: []\n", "1:9: error: a `[...]` list: write its entries one `- ` line each"),
        (f"- {ALICE}\n", "same token as tokens.0"),
    ]:
        tokens.write_text(text)
        done = szb_token("--tenant", "team-a", "--token", ALICE_TOKEN, "--append", f"{tokens}")
        err = done.stderr
        assert done.returncode == 1 and said in err and "the file is unchanged" in err, err
        assert tokens.read_text() == text and "token-of-alice" not in done.stderr
