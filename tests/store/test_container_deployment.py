"""The container deployment, proven without a container engine.

Observation 3 of issue 12: the image would crash-loop, the agent port was not exposed, it ran
as root without a HEALTHCHECK, the postgres extra was missing, compose had no PostgreSQL and
baked the configs in. This test reads docker/Dockerfile and docker/compose.yaml, then runs the
image's ENTRYPOINT + CMD with the compose file's environment, secrets and volumes mapped to
folders on this machine, against the real PostgreSQL; it runs the HEALTHCHECK command, scrapes
/metrics as Prometheus is configured to, and edits the mounted policy (hot reload). The only
change: the three listen addresses are free loopback ports instead of 0.0.0.0:50051/8081/9464.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ruamel.yaml import YAML

from tests.brokerproc import ROOT

DOCKER = ROOT / "docker"


def dockerfile() -> tuple[list[str], dict[str, Any]]:
    """(stage names, the final stage's instructions: ENTRYPOINT, CMD, ENV, USER, ...)."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / "Dockerfile").read_text())
    stages: list[str] = []
    final: dict[str, Any] = {"ENV": {}, "COPY": [], "EXPOSE": []}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append(rest)
            final = {"ENV": {}, "COPY": [], "EXPOSE": [], "RUN": []}
        elif word in ("ENTRYPOINT", "CMD"):
            final[word] = json.loads(rest)
        elif word == "HEALTHCHECK":
            final[word] = json.loads(rest[rest.index("CMD") + 3 :].strip())
        elif word == "ENV":
            final["ENV"].update(dict(part.split("=", 1) for part in shlex.split(rest)))
        elif word == "EXPOSE":
            final["EXPOSE"].extend(int(p) for p in rest.split())
        elif word == "COPY":
            final["COPY"].append(rest.split())
        elif word in ("USER", "WORKDIR"):
            final[word] = rest
        elif word == "RUN":
            final.setdefault("RUN", []).append(rest)
    return stages, final


def compose() -> dict[str, Any]:
    return YAML(typ="safe").load((DOCKER / "compose.yaml").read_text())  # type: ignore[no-any-return]


def _env_value(value: Any) -> str:
    """compose's `${VAR:-default}` with VAR unset (this machine has no cloud accounts)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def readme_block(heading: str) -> list[str]:
    """Command lines of the first ```sh block under `heading`."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text[text.index(heading) :], re.S)
    assert block, f"no sh block under {heading}"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_postgres() -> None:
    stages, final = dockerfile()
    assert len(stages) >= 2 and " AS " in stages[0].upper()
    build = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"pip install[^\n]*\[[^\]]*postgres", build), "the postgres extra is not installed"
    assert final.get("USER") not in (None, "root", "0")
    assert final["HEALTHCHECK"][:2] == ["szb", "health"]
    services = compose()["services"]
    published = {int(str(p).split(":")[-1]) for p in services["broker"]["ports"]}
    assert {50051, 8081, 9464} <= set(final["EXPOSE"]) and {50051, 8081, 9464} <= published
    assert "postgres" in services and "prometheus" in services
    assert any(":/etc/szb:ro" in v for v in services["broker"]["volumes"])  # configs mounted: hot reload
    prom = YAML(typ="safe").load((DOCKER / "prometheus.yml").read_text())
    static = [sc for job in prom["scrape_configs"] for sc in job.get("static_configs", [])]
    targets = [t for sc in static for t in sc["targets"]]
    assert "broker:9464" in targets


def image_user() -> dict[str, Any]:
    """Popen arguments that run a process as the image's USER (uid and gid from its useradd)."""
    _, final = dockerfile()
    useradd = " ".join(final.get("RUN", []))
    uid = re.search(r"useradd\b[^&]*--uid (\d+)", useradd)
    gid = re.search(r"groupadd\b[^&]*--gid (\d+)", useradd)
    assert uid and gid, "the image's user has no fixed uid/gid"
    return {"user": int(uid.group(1)), "group": int(gid.group(1)), "extra_groups": []}


class Mapper:
    """Container paths → folders on this machine (volumes, secrets, the image's COPY)."""

    def __init__(self, pairs: dict[str, Path]) -> None:
        self.pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, text: str) -> str:
        for container, host in self.pairs:
            text = re.sub(rf"{re.escape(container)}(?=[/\s\"',}}]|$)", str(host), text)
        return text


@pytest.fixture
def deployment(pg_dsn: str) -> Iterator[tuple[Mapper, dict[str, str], list[str], Path, str]]:
    # Not pytest's tmp_path: its parents are 0700 root, and the image's user must reach the
    # mounted configs and secrets as it would in the container.
    tmp_path = Path(tempfile.mkdtemp(prefix="szb-deploy-"))
    tmp_path.chmod(0o755)
    try:
        yield _deployment(tmp_path, pg_dsn)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _deployment(tmp_path: Path, pg_dsn: str) -> tuple[Mapper, dict[str, str], list[str], Path, str]:
    spec = compose()
    broker = spec["services"]["broker"]
    _, final = dockerfile()
    # The operator's preparation: README "Deployment", run as written (all but `docker ...`).
    shell = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SZB_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    token = ""
    for line in readme_block("### Deployment"):
        if line.startswith("docker "):
            continue  # no container engine here: the test runs the image's entrypoint instead
        out = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=shell, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, f"$ {line}\n{out.stderr}"
        if "--role operator" in line and "--token" not in line:
            token = out.stderr.split()[-1]
    secrets_dir = tmp_path / "docker" / "secrets"
    assert token and token not in (secrets_dir / "tokens.yaml").read_text()
    # compose's `postgres` host is, here, the test's PostgreSQL.
    (secrets_dir / "store_dsn").write_text(pg_dsn + "\n")
    configs = tmp_path / "configs"  # the mounted ../configs (a copy: this test edits it)
    subprocess.run(["cp", "-r", str(ROOT / "configs"), str(configs)], check=True)
    data = tmp_path / "volume-broker-data"
    data.mkdir()
    pairs: dict[str, Path] = {}
    for name in broker["secrets"]:
        source = (DOCKER / spec["secrets"][name]["file"]).resolve()
        pairs[f"/run/secrets/{name}"] = secrets_dir / source.relative_to((DOCKER / "secrets").resolve())
    for volume in broker["volumes"]:
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            pairs[container] = (DOCKER / host).resolve()
        else:  # a named volume
            pairs[container] = data
    pairs["/etc/szb"] = configs
    deploy_dir = tmp_path / "etc-szb-deploy"
    deploy_dir.mkdir()
    for src, dest in (c for c in final["COPY"] if not c[0].startswith("--")):
        if dest.endswith(".yaml") and dest not in pairs:
            pairs[dest] = deploy_dir / Path(dest).name
            pairs[dest].write_text((ROOT / src).read_text())
    mapper = Mapper(pairs)
    # Config files that name container paths are rewritten with this machine's.
    for container, host in list(pairs.items()):
        if container.endswith("broker.yaml"):
            copy = deploy_dir / "broker.yaml"
            copy.write_text(mapper(Path(host).read_text()))
            pairs[container] = copy
    mapper = Mapper(pairs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SZB_", "AWS_", "ALIBABA_CLOUD_"))}
    env.update({k: mapper(v) for k, v in final["ENV"].items() if k != "PATH"})
    env.update({k: mapper(_env_value(v)) for k, v in (broker.get("environment") or {}).items()})
    env.update(
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONPATH=str(ROOT),
        HOME=str(tmp_path),
        SZB_LISTEN="127.0.0.1:0",
        SZB_AGENT_HTTP_LISTEN="127.0.0.1:0",
        SZB_METRICS_LISTEN="127.0.0.1:0",
    )
    argv = [mapper(a) for a in [*final["ENTRYPOINT"], *(broker.get("command") or final["CMD"])]]
    return mapper, env, argv, Path(mapper(final.get("WORKDIR", "/"))), token


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as the image's uid needs root")
def test_the_image_user_can_read_every_secret_the_readme_prepares(
    deployment: tuple[Mapper, dict[str, str], list[str], Path, str],
) -> None:
    """Compose mounts a file secret as it is on the host (owner, mode: no uid/gid/mode for
    file secrets), and the broker runs as the image's unprivileged USER; a secret only root can
    read stops it ('tls.key_file: cannot read ...: Permission denied') and the container
    restarts forever. The broker itself cannot run as that uid here (this machine's Python is
    under /root), so each secret the broker service mounts is read with cat as that uid."""
    mapper = deployment[0]
    broker = compose()["services"]["broker"]
    unreadable = {}
    for name in broker["secrets"]:
        path = mapper(f"/run/secrets/{name}")
        out = subprocess.run(["cat", path], capture_output=True, text=True, timeout=30, **image_user())
        if out.returncode != 0:
            unreadable[name] = out.stderr.strip()
    assert not unreadable, unreadable


def test_image_entrypoint_and_cmd_run_with_the_compose_environment(
    deployment: tuple[Mapper, dict[str, str], list[str], Path, str], pg_dsn: str
) -> None:
    mapper, env, argv, workdir, operator = deployment
    assert argv[:2] == ["szb", "serve"]
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    found: dict[str, str] = {}

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"metrics on (https?://[^\s\"]+)", line):  # (a JSON record's message too)
                found["metrics"] = m.group(1)
            if m := re.search(r"serving on port (\d+)", line):
                found["port"] = m.group(1)
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not ready.wait(0.2):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        port = found["port"]
        _, final = dockerfile()
        # The HEALTHCHECK, as the container engine would run it (TLS verified with SZB_TLS_CA).
        health = [a.replace(":50051", f":{port}") for a in final["HEALTHCHECK"]]
        checked = subprocess.run(health, env=env, cwd=workdir, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and "SERVING" in checked.stdout, checked.stderr

        client = {**env, "SZB_SERVER": f"localhost:{port}", "SZB_TOKEN": operator}

        def szb(*args: str) -> subprocess.CompletedProcess[str]:
            out = subprocess.run(
                ["szb", *args], env=client, cwd=workdir, capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, f"szb {' '.join(args)}\n{out.stdout}\n{out.stderr}"
            return out

        status = json.loads(szb("status", "-o", "json").stdout)
        unhealthy = status.get("unhealthy_sites") or status.get("unhealthy") or {}
        assert "aws-us-east-1" in unhealthy and "shangzhuang-onprem" in unhealthy, status  # degraded, up

        # The state is in PostgreSQL (the store_dsn secret), not in a file in the volume.
        with psycopg.connect(pg_dsn) as db:
            versions = db.execute("SELECT hash, result FROM policy_versions").fetchall()
        assert versions and versions[0][1] == "loaded"
        assert not list(workdir.glob("*.db"))

        # Prometheus' view: /metrics over TLS with the CA it is given; every dashboard query's
        # metric exists.
        ca = mapper("/run/secrets/szb_tls_ca")
        prom = YAML(typ="safe").load((DOCKER / "prometheus.yml").read_text())
        credentials = prom["scrape_configs"][0]["authorization"]["credentials_file"]
        mounted = compose()["services"]["prometheus"]["volumes"]
        host = next(v.split(":")[0] for v in mounted if v.split(":")[1] == credentials)
        docker_dir = Path(mapper("/run/secrets/tokens")).parent.parent  # (the operator's docker/)
        bearer = (docker_dir / host).read_text().strip()
        curl = ["curl", "-sf", "--cacert", ca, found["metrics"]]
        anonymous = subprocess.run(curl, capture_output=True, text=True, timeout=30)
        assert anonymous.returncode == 22, anonymous  # 401: every tenant's money is there
        scraped = subprocess.run(
            [*curl, "-H", f"Authorization: Bearer {bearer}"], capture_output=True, text=True, timeout=30
        )
        assert scraped.returncode == 0, scraped.stderr
        names = set(re.findall(r"^(szb_[a-z_]+)", scraped.stdout, re.M))  # series with samples
        for name, kind in re.findall(r"^# TYPE (szb_[a-z_]+) (\w+)", scraped.stdout, re.M):
            names.add(name)  # families with no series yet (nothing queued, no burst so far)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        dashboard = (ROOT / "docker" / "grafana" / "dashboards" / "shangzhuang-broker.json").read_text()
        used = set(re.findall(r"\b(szb_[a-z_]+)", dashboard))
        assert used, "the dashboard queries nothing"
        # Histograms and counters are queried by their series names (_bucket, _total).
        missing = {n for n in used if n not in names and not n.endswith(("_bucket", "_count", "_sum"))}
        missing |= {n for n in used if n.endswith("_bucket") and n not in names}
        assert not missing, f"dashboard metrics the broker does not export now: {missing}"
        assert "szb_policy_info{" in scraped.stdout

        # Hot reload of the mounted configs.
        policy = Path(mapper("/etc/szb/policy.yaml"))
        policy.write_text(policy.read_text() + "\n# edited on the host\n")
        deadline = time.monotonic() + 20
        while True:
            history = szb("policy", "history", "-o", "json").stdout
            if len(json.loads(history)["versions"]) >= 2:
                break
            assert time.monotonic() < deadline, history
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    log = "".join(lines)
    assert operator not in log
    assert all(line.startswith(("{", "szb: ")) for line in lines), log  # SZB_LOG_FORMAT=json
