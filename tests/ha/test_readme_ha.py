"""Every command of the README's "High availability" section, run as written: two schedulers
(one becomes active) and an API replica on configs/broker.yaml with the store in PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.brokerproc import ROOT
from tests.e2e.test_readme_quick_tour import Server, base_env, fresh_clone, run

COVERED = {
    "szb serve --config configs/broker.yaml --role scheduler",
    "szb serve --config configs/broker.yaml --role api",
}


def ha_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### High availability") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no sh block under 'High availability'"
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines() if line.strip()]


def test_every_ha_command_is_run_here() -> None:
    assert set(ha_commands()) == COVERED


def test_the_readme_topology_runs_from_a_fresh_clone(tmp_path: Path, pg_dsn: str) -> None:
    folder = fresh_clone(tmp_path)
    env = base_env(folder)
    run("szb tls init configs/tls", folder, env)
    made = run("szb token --tenant ops --role operator --name oncall >> configs/tokens.yaml", folder, env)
    token = made.stderr.split()[-1]
    serve_env = {
        **env,
        "SZB_STORE_DSN": pg_dsn,
        "SZB_LISTEN": "127.0.0.1:0",
        "SZB_AGENT_HTTP_LISTEN": "127.0.0.1:0",
        "SZB_METRICS_LISTEN": "127.0.0.1:0",
    }
    servers: list[Server] = []
    try:
        for command in ha_commands():
            servers.append(Server(command, folder, serve_env))
            if command.endswith("scheduler"):  # the README says two or more
                servers.append(Server(command, folder, serve_env))
        deadline = time.monotonic() + 60
        while sum(any("scheduler active" in ln for ln in s.lines) for s in servers) != 1:
            assert time.monotonic() < deadline, [s.lines for s in servers]
            time.sleep(0.2)
        api = servers[-1]
        env.update(SZB_SERVER=f"127.0.0.1:{api.port}", SZB_TOKEN=token, SZB_TLS_CA="configs/tls/ca.pem")
        status = json.loads(run("szb status -o json", folder, env).stdout)
        assert status, status
        active = [s for s in servers if any("scheduler active" in ln for ln in s.lines)]
        assert len(active) == 1
    finally:
        for server in servers:
            server.stop()
    assert not (folder / ".szb" / "broker.db").exists(), "a role used SQLite"
