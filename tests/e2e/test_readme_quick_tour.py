"""Every command of the README's "A quick tour", run as written, from a fresh folder.

Observations 1, 2 and 9 of issue 12: `szb serve` on the embedded default failed every job (a
relative data dir used by runners in another folder), `szb serve --config configs/broker.yaml`
did not start, and `szb simulate` crashed after `make demo`. Nothing here passes an absolute
data dir or a config of its own: a copy of the repository's `configs/` in a temporary folder
is the fresh clone, and each README line runs through `bash -c` with its placeholders (ID,
JOB.yaml, HOST:PORT, HASH) filled in. The only environment the tests add is where to listen
(`SZB_LISTEN`, `SZB_AGENT_HTTP_LISTEN`, `SZB_METRICS_LISTEN` on free loopback ports, so runs
in parallel never fight over 50051) and `SZB_SERVER` for the clients, as the README says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters._sandbox import _default_job_root
from broker.store import SqliteStore
from tests.brokerproc import ROOT

JOB = "configs/examples/finetune-a800.yaml"

# README line -> the test that runs it literally (placeholders filled in there).
COVERED = {
    "szb tls init configs/tls": "test_example_broker_yaml_starts_and_degrades_missing_clouds",
    "szb serve --config configs/broker.yaml": "test_example_broker_yaml_starts_and_degrades_missing_clouds",
    f"szb submit {JOB} --wait": "test_quick_tour_on_the_embedded_default",
    "szb list --state RUNNING --label project=glm": "test_quick_tour_on_the_embedded_default",
    "szb get ID": "test_quick_tour_on_the_embedded_default",
    "szb watch ID --after 3": "test_quick_tour_on_the_embedded_default",
    "szb cancel ID": "test_quick_tour_on_the_embedded_default",
    "szb explain JOB.yaml --policy configs/policy.yaml --tenant pku-nlp": "test_offline_commands",
    "szb explain JOB.yaml --server HOST:PORT": "test_quick_tour_on_the_embedded_default",
    "szb explain JOB_ID --server HOST:PORT": "test_quick_tour_on_the_embedded_default",
    "szb status": "test_quick_tour_on_the_embedded_default",
    "szb spend [--tenant ID]": "test_quick_tour_on_the_embedded_default",
    "szb token --tenant ID": "test_offline_commands",
    "szb list --wide --page-size 20 --page-token TOKEN": "test_quick_tour_on_the_embedded_default",
    "szb logs ID --follow": "test_quick_tour_on_the_embedded_default",
    "szb offers --tenant ID --accelerator A800": "test_quick_tour_on_the_embedded_default",
    "szb spend --since 7d --by day": "test_quick_tour_on_the_embedded_default",
    "szb policy check configs/policy.yaml": "test_offline_commands",
    "szb policy test configs/policy.yaml configs/policy-tests.yaml": "test_offline_commands",
    "szb policy schema > policy.schema.json": "test_offline_commands",
    "szb hardware classify --output json": "test_offline_commands",
    "szb policy history": "test_quick_tour_on_the_embedded_default",
    "szb policy show HASH": "test_quick_tour_on_the_embedded_default",
    "szb audit --job ID": "test_quick_tour_on_the_embedded_default",
    "szb audit --tenant ID --since 1d": "test_quick_tour_on_the_embedded_default",
    "szb simulate --trace configs/traces/alibaba-gpu-v2023-openb-pods.csv.gz --policy "
    "configs/policy-sim.yaml --scenario configs/scenarios/alibaba-peak.yaml --baselines all "
    "--report out/": "test_simulate_as_written",
    # Run in tests/e2e/test_policy_replay.py on a store a real `szb serve` left behind.
    "szb policy replay --policy candidate.yaml --since 7d --data-dir .szb --report replay/": (
        "test_readme_line_shows_a_moved_and_a_refused_job"
    ),
    "szb backup broker-backup.db --data-dir .szb": "test_quick_tour_on_the_embedded_default",
}


def quick_tour() -> list[str]:
    """The commands of the quick tour block: comments dropped, `\\` lines joined, one per entry."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(.*?)```", text[text.index("## A quick tour") :], re.S)
    assert block, "no code block under 'A quick tour'"
    commands = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        for part in re.split(r"\s{2,}(?=szb )", line):
            if part:
                commands.append(re.sub(r"\s+", " ", part.strip()))
    return commands


def test_every_quick_tour_command_is_run_by_a_test() -> None:
    missing = [c for c in quick_tour() if c not in COVERED]
    assert not missing, f"README commands no test runs (add them to COVERED and run them): {missing}"


def fresh_clone(folder: Path) -> Path:
    """The repository's configs as a fresh clone has them (no certificates, no state)."""
    shutil.copytree(ROOT / "configs", folder / "configs", ignore=shutil.ignore_patterns("tls"))
    return folder


def base_env(home: Path) -> dict[str, str]:
    """The user's shell: `szb` on PATH, no broker settings, no cloud credentials."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SZB_", "AWS_", "ALIBABA_CLOUD_", "ALICLOUD_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONPATH=str(ROOT),
        GRPC_VERBOSITY="ERROR",
        HOME=str(home),
        COLUMNS="200",
    )
    return env


def run(
    command: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One README line, exactly as a user types it, with placeholders already filled in."""
    out = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"$ {command}\n{out.stdout}\n{out.stderr}"
    return out


class Server:
    """A README `szb serve ...` line running in the background, its output kept."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ready = threading.Event()
        self.port = ""
        self.metrics = ""

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if m := re.search(r"metrics on (\S+)", line):
                    self.metrics = m.group(1)
                if m := re.search(r"serving on port (\d+)", line):
                    self.port = m.group(1)
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.2):
            assert self.proc.poll() is None and time.monotonic() < deadline, "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield fresh_clone(tmp_path)


def test_quick_tour_on_the_embedded_default(folder: Path) -> None:
    """`szb serve` with no arguments in a fresh folder runs jobs (no absolute --data-dir)."""
    env = base_env(folder)
    serve_env = {**env, "SZB_LISTEN": "127.0.0.1:0"}
    server_dir = folder / "elsewhere"  # the broker's folder is not where the clients run
    server_dir.mkdir()
    server = Server("szb serve", server_dir, serve_env)
    job_id = ""
    extra_jobs: list[str] = []
    try:
        env["SZB_SERVER"] = f"127.0.0.1:{server.port}"
        done = run(f"szb submit {JOB} --wait", folder, env)
        assert "SUCCEEDED" in done.stdout and "training on devices" in done.stdout
        assert (server_dir / ".szb" / "broker.db").exists()  # the default data dir, where it started
        hello = run("szb submit configs/examples/hello.yaml --wait", folder, env)
        assert "hello from" in hello.stdout
        # Its jobs' folders are its own (`$TMPDIR/szb-jobs-<hash of the data dir>`, as the README
        # says), not one fixed folder every embedded-default broker on the host shared.
        (folder / "where.yaml").write_text(
            "name: where\ncommand: [python3, -c, \"import os; print('in', os.environ['SZB_WORKDIR'])\"]\n"
            "runtime_estimate: 1m\n"
        )
        where = run("szb submit where.yaml --wait", folder, env)
        own = _default_job_root((server_dir / ".szb").resolve())
        assert f"in {own}/" in where.stdout, where.stdout

        # A long job labelled like the README's filter, to list, get, watch and cancel.
        (folder / "long.yaml").write_text(
            "name: long-glm\ncommand: [sleep, '300']\nruntime_estimate: 10m\nlabels: {project: glm}\n"
        )
        submitted = run("szb submit long.yaml -o json", folder, env)
        body = json.loads(submitted.stdout)
        job_id = (body[0] if isinstance(body, list) else body)["id"]
        deadline = time.monotonic() + 30
        while True:
            listed = run("szb list --state RUNNING --label project=glm", folder, env)
            if job_id in listed.stdout:
                break
            assert time.monotonic() < deadline, listed.stdout
            time.sleep(0.3)
        assert job_id in run(f"szb get {job_id}", folder, env).stdout
        assert "CANCELLED" in run(f"szb cancel {job_id}", folder, env).stdout
        watched = run(f"szb watch {job_id} --after 3", folder, env)
        assert "CANCELLED" in watched.stdout and " #1 " not in watched.stdout
        explained = run(f"szb explain {JOB} --server {env['SZB_SERVER']}", folder, env)
        assert "A800" in explained.stdout
        # Every A800 taken by one job, a second waits: explained by its id where it stands.
        (folder / "all-gpus.yaml").write_text(
            "name: all-gpus\ncommand: [sleep, '300']\nruntime_estimate: 10m\n"
            "resources: {accelerators: {count: 8, any_of: [A800]}}\n"
        )
        hog = json.loads(run("szb submit all-gpus.yaml -o json", folder, env).stdout)[0]["id"]
        waiting = json.loads(run("szb submit all-gpus.yaml -o json", folder, env).stdout)[0]["id"]
        extra_jobs = [hog, waiting]
        deadline = time.monotonic() + 30
        while "wait" not in (queued := run(f"szb explain {waiting} --server {env['SZB_SERVER']}", folder,
                                           env)).stdout.lower():
            assert time.monotonic() < deadline, queued.stdout
            time.sleep(0.3)
        assert waiting in queued.stdout and "A800" in queued.stdout, queued.stdout
        for extra in extra_jobs:
            run(f"szb cancel {extra}", folder, env)
        extra_jobs = []
        assert "Jobs:" in run("szb status", folder, env).stdout
        run("szb spend", folder, env)
        run("szb spend --tenant dev", folder, env)
        everyone = run("szb spend --tenant '*'", folder, env)  # obs. 5/8: no fake "Budget 0.00"
        assert "Budget" not in everyone.stdout, everyone.stdout
        assert json.loads(run("szb spend --tenant '*' -o json", folder, env).stdout)["budget"] is None
        by_day = run("szb spend --since 7d --by day", folder, env)
        assert "DAY" in by_day.stdout and "Budget 0.00" not in by_day.stdout
        first = json.loads(run("szb list --page-size 1 -o json", folder, env).stdout)
        assert first["next_page_token"], first
        wide = run(f"szb list --wide --page-size 20 --page-token {first['next_page_token']}", folder, env)
        assert first["jobs"][0]["id"] not in wide.stdout and "COST" in wide.stdout
        finetune = json.loads(run("szb list --page-size 1 -o json", folder, env).stdout)["jobs"][0]["id"]
        logs = run(f"szb logs {finetune} --follow", folder, env)
        assert "training on devices" in logs.stdout
        offers = run("szb offers --tenant dev --accelerator A800", folder, env)
        assert "A800" in offers.stdout and "allowed" in offers.stdout

        history = run("szb policy history", folder, env)
        active = re.search(r"in force: ([0-9a-f]{12})", history.stdout)
        assert active, history.stdout
        shown = run(f"szb policy show {active.group(1)}", folder, env)
        assert "sites:" in shown.stdout and "local" in shown.stdout
        audit = run(f"szb audit --job {job_id}", folder, env)
        assert "submitted" in audit.stdout and "cancelled" in audit.stdout
        by_tenant = run("szb audit --tenant dev --since 1d", folder, env)
        assert job_id in by_tenant.stdout and "placed" in by_tenant.stdout
        # In the broker's folder (its .szb), while it runs: a copy that opens as a store.
        backup = run("szb backup broker-backup.db --data-dir .szb", server_dir, env)
        assert "checked" in backup.stdout, backup.stdout
        copy = SqliteStore(server_dir / "broker-backup.db")
        try:
            assert copy.get(job_id).id == job_id
        finally:
            copy.close()
    finally:
        for left in [job_id, *extra_jobs]:  # never leave a long job running after a failure
            if left:
                subprocess.run(["bash", "-c", f"szb cancel {left}"], cwd=folder, env=env, check=False)
        server.stop()
    log = "".join(server.lines)
    assert "lost" not in log and "runner process ended" not in log


def test_example_broker_yaml_starts_and_degrades_missing_clouds(folder: Path) -> None:
    """The production-like broker.yaml starts from a fresh clone with the shipped tokens file;
    sites it cannot reach (no cloud profile, no credentials, no slurmrestd) are out of service
    with their reason in `szb status` and `/metrics`, and the broker keeps serving."""
    env = base_env(folder)
    run("szb tls init configs/tls", folder, env)
    made = run("szb token --tenant ops --role operator --name oncall >> configs/tokens.yaml", folder, env)
    token = made.stderr.split()[-1]
    serve_env = {
        **env,
        "SZB_LISTEN": "127.0.0.1:0",
        "SZB_AGENT_HTTP_LISTEN": "127.0.0.1:0",
        "SZB_METRICS_LISTEN": "127.0.0.1:0",
    }
    server = Server("szb serve --config configs/broker.yaml", folder, serve_env)
    try:
        assert server.metrics.startswith("https://"), server.lines  # TLS on the metrics port too
        env.update(SZB_SERVER=f"127.0.0.1:{server.port}", SZB_TOKEN=token, SZB_TLS_CA="configs/tls/ca.pem")
        status = json.loads(run("szb status -o json", folder, env).stdout)
        unhealthy = status.get("unhealthy_sites") or status.get("unhealthy") or {}
        assert "profile" in unhealthy.get("aws-us-east-1", "").lower(), unhealthy
        assert "aws-cn-north-1" in unhealthy and "shangzhuang-onprem" in unhealthy
        assert "credentials" in unhealthy.get("aliyun-cn-beijing", "").lower(), unhealthy
        curl = ["curl", "-sf", "--cacert", "configs/tls/ca.pem", server.metrics]
        refused = subprocess.run(curl, cwd=folder, capture_output=True, text=True, timeout=30)
        assert refused.returncode == 22 and not refused.stdout  # (HTTP 401: operators only)
        metrics = subprocess.run(
            [*curl, "-H", f"Authorization: Bearer {token}"], cwd=folder, capture_output=True, text=True,
            timeout=30,
        )
        assert metrics.returncode == 0, metrics.stderr
        assert "szb_site_unhealthy{reason=" in metrics.stdout and 'site="aws-us-east-1"' in metrics.stdout
    finally:
        server.stop()
    assert (folder / ".szb" / "broker.db").exists()  # broker.yaml's `data_dir: ../.szb`
    assert token not in "".join(server.lines)


def test_offline_commands(folder: Path) -> None:
    env = base_env(folder)
    explained = run(f"szb explain {JOB} --policy configs/policy.yaml --tenant pku-nlp", folder, env)
    assert explained.stdout.strip()
    run("szb policy check configs/policy.yaml", folder, env)
    run("szb policy test configs/policy.yaml configs/policy-tests.yaml", folder, env)
    run("szb policy schema > policy.schema.json", folder, env)
    assert json.loads((folder / "policy.schema.json").read_text())["properties"]
    classes = json.loads(run("szb hardware classify --output json", folder, env).stdout)
    assert classes
    made = run("szb token --tenant pku-nlp", folder, env)
    assert "pku-nlp" in made.stdout


def test_demo_installs_what_simulate_needs() -> None:
    """`make demo` installs the `demo` extra; it must bring the simulator's own (`sim`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def closure(name: str) -> set[str]:
        out: set[str] = set()
        for req in extras[name]:
            m = re.match(r"shangzhuang-broker\[([^\]]+)\]", req)
            if m:
                for inner in m.group(1).split(","):
                    out |= closure(inner.strip())
            else:
                out.add(re.split(r"[<>=\[ ]", req)[0].lower())
        return out

    assert {re.split(r"[<>=\[ ]", r)[0].lower() for r in extras["sim"]} <= closure("demo")
    assert ".[demo]" in (ROOT / "Makefile").read_text()


def test_simulate_as_written(folder: Path) -> None:
    command = next(c for c in COVERED if c.startswith("szb simulate"))
    out = run(command, folder, base_env(folder), timeout=600)
    assert (folder / "out").is_dir() and any((folder / "out").iterdir()), out.stdout
