"""`szb status` of a broker with no jobs says so, as its other lines do ("Jobs:" was left empty)."""

from __future__ import annotations

from pathlib import Path

from tests.brokerproc import BrokerProcess, szb
from tests.e2e.conftest import TOKENS, write_broker_config


def test_status_of_a_broker_without_jobs_says_none(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    try:
        out = szb(broker, TOKENS["team-a"], "status")
    finally:
        broker.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Jobs: none" in lines and "Active by site: none" in lines, out.stdout


def test_status_at_80_columns_keeps_ids_and_errors_whole(tmp_path: Path) -> None:
    """Review: at 80 columns `szb status` cut a long site id to `shangzhuang…` and a refused
    reload's error before its end, which names the field (`unknown field 'wieght'`)."""
    import time

    from broker.auth import Role, token_entry_line
    from tests.brokerproc import write_broker_folder
    from tests.e2e.conftest import POLICY

    site = "shangzhuang-onprem-cluster-beijing-north"
    policy = POLICY.replace("  - id: local\n", f"  - id: {site}\n")
    config = write_broker_folder(tmp_path, policy, TOKENS)
    operator = "token-operator-status-0123456789"
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", operator, Role.OPERATOR, "alice") + "\n")
    broker = BrokerProcess(config)
    broker.start()
    try:
        (tmp_path / "policy.yaml").write_text(
            policy.replace("{id: team-a, kind: university,", "{id: team-a, kind: university, wieght: 3,")
        )
        deadline = time.monotonic() + 30
        while "reload refused" not in (out := szb(broker, operator, "status", env={"COLUMNS": "80"})).stdout:
            assert time.monotonic() < deadline, out.stdout
            time.sleep(0.3)
    finally:
        broker.stop()
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "…" not in text, text
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert first_column.count(site) == 2, text  # folded, not cut
    assert "unknown field 'wieght'" in text, text
