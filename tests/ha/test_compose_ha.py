"""docker/compose.yaml's `ha` profile: the `broker` service as an API replica (SZB_ROLE=api)
and `scheduler` candidates, run from the image's ENTRYPOINT and CMD with the compose file's
environment, secrets and volumes mapped to local folders (as tests/store does for `broker`)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from ruamel.yaml import YAML

from tests.store.test_container_deployment import DOCKER, Mapper, _env_value, compose, deployment, dockerfile

__all__ = ["deployment"]

LEADER_HEALTH = "shangzhuang.broker.v1.Scheduler"


def test_the_scheduler_service_is_the_broker_in_role_scheduler_behind_the_ha_profile() -> None:
    services = compose()["services"]
    broker, scheduler = services["broker"], services["scheduler"]
    assert scheduler["profiles"] == ["ha"]  # a plain `docker compose up` stays one process
    assert _env_value(broker["environment"]["SZB_ROLE"]) == "all"
    assert scheduler["environment"]["SZB_ROLE"] == "scheduler"
    assert "ports" not in scheduler  # nothing listens for clients or instances there
    assert scheduler["secrets"] == broker["secrets"] and scheduler["volumes"] == broker["volumes"]
    rest = {k: v for k, v in scheduler["environment"].items() if k != "SZB_ROLE"}
    assert rest == {k: v for k, v in broker["environment"].items() if k != "SZB_ROLE"}


def test_prometheus_scrapes_every_scheduler_candidate() -> None:
    # Dispatch, launch and adapter metrics and szb_scheduler_leader exist only on the schedulers.
    port = YAML(typ="safe").load((DOCKER / "broker.yaml").read_text())["metrics_listen"].rpartition(":")[2]
    prom = YAML(typ="safe").load((DOCKER / "prometheus.yml").read_text())
    found = [
        (sd["names"], sd.get("type", "SRV"), str(sd.get("port")), job)
        for job in prom["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
    ]
    # By the service's name, which compose's DNS resolves to every replica (--scale scheduler=2).
    scraped = [job for names, kind, at, job in found if names == ["scheduler"] and kind == "A" and at == port]
    assert scraped, prom["scrape_configs"]
    broker_job = next(j for j in prom["scrape_configs"] if "broker:9464" in str(j.get("static_configs")))
    assert (
        scraped[0]["scheme"] == broker_job["scheme"] and scraped[0]["tls_config"] == broker_job["tls_config"]
    )


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.port = ""
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if m := re.search(r"serving on port (\d+)", line):
                    self.port = m.group(1)
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 90
        while not ready.wait(0.2):
            assert self.proc.poll() is None and time.monotonic() < deadline, "".join(self.lines)

    def leading(self) -> bool:
        return any("scheduler active" in line for line in self.lines)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_the_ha_profile_runs_an_api_replica_and_two_scheduler_candidates(
    deployment: tuple[Mapper, dict[str, str], list[str], Path, str],
) -> None:
    mapper, env, argv, workdir, operator = deployment
    scheduler_env = {
        **env,
        **{k: mapper(_env_value(v)) for k, v in compose()["services"]["scheduler"]["environment"].items()},
    }
    procs: list[Proc] = []
    try:
        api = Proc(argv, {**env, "SZB_ROLE": "api"}, workdir)  # SZB_ROLE=api docker compose ...
        procs.append(api)
        candidates = [Proc(argv, scheduler_env, workdir) for _ in range(2)]  # --scale scheduler=2
        procs.extend(candidates)
        deadline = time.monotonic() + 60
        while sum(c.leading() for c in candidates) != 1:
            assert time.monotonic() < deadline, [c.lines for c in candidates]
            time.sleep(0.2)
        _, final = dockerfile()
        for c in candidates:  # the image's HEALTHCHECK passes on the leader and the standby
            health = [a.replace(":50051", f":{c.port}") for a in final["HEALTHCHECK"]]
            checked = subprocess.run(health, env=env, cwd=workdir, capture_output=True, text=True, timeout=60)
            assert checked.returncode == 0 and "SERVING" in checked.stdout, checked.stderr
            ready = subprocess.run(
                [*health, "--service", LEADER_HEALTH],
                env=env,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert (ready.returncode == 0) == c.leading(), (ready.stdout, ready.stderr)
        client = {**env, "SZB_SERVER": f"localhost:{api.port}", "SZB_TOKEN": operator}
        status = subprocess.run(
            ["szb", "status", "-o", "json"],
            env=client,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
    finally:
        for p in procs:
            p.stop()
