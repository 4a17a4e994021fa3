"""`make demo`: the broker's main job, live, on this machine.

Part 1 runs the broker on its embedded default (this host as the only site) and submits the
example jobs of `configs/examples/`. Part 2 shows overflow bursting: a small on-prem site
(Slurm when its single-node cluster can be started here, else the local executor) fills up,
impatient jobs burst to the clouds, patient ones wait, and one job is refused for export
compliance. The clouds are the local emulators the tests use (moto for AWS, an ECS endpoint
for Alibaba Cloud); each emulated instance boots by running the very UserData the broker
gave it, which reports back to the broker's agent endpoint.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.live import Live  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from broker.api import broker_service_pb2 as pb  # noqa: E402
from broker.api import broker_service_pb2_grpc, job_pb2  # noqa: E402
from broker.auth import hash_token  # noqa: E402
from broker.client import describe_rpc_error  # noqa: E402
from broker.serde import state_from_proto  # noqa: E402
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint  # noqa: E402
from tests.doubles.moto_front import MotoFront  # noqa: E402

console = Console()
WORK = ROOT / ".demo"
SZB = [sys.executable, "-m", "broker.cli"]
TOKENS = {"pku-nlp": "demo-token-pku-nlp", "ops": "demo-token-ops"}
ECS_KEYS = {"demo-ak": "demo-secret"}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
CLOUDS = ("aliyun", "aws")
"""Site id prefixes of the demo's (emulated) clouds."""
STYLE = {
    "QUEUED": "yellow",
    "PLACING": "cyan",
    "PROVISIONING": "cyan",
    "RUNNING": "blue",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "PREEMPTED": "yellow",
}


@contextmanager
def broker(args: list[str], log: Path) -> Iterator[str]:
    """`szb serve ARGS` on a free port; yields its address and stops it on exit."""
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*SZB, "serve", "--listen", "127.0.0.1:0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        address = ""
        for line in proc.stdout:
            out.write(line)
            if "NO TOKENS FILE" in line:
                console.print("[yellow]broker:[/] no tokens file, so every caller is the built-in dev tenant")
            m = re.search(r"serving on port (\d+)", line)
            if m:
                address = f"127.0.0.1:{m.group(1)}"
                break
        if not address:
            raise SystemExit(f"the broker did not start; see {log}")
        pump = threading.Thread(target=lambda: [out.write(ln) for ln in proc.stdout or ()], daemon=True)
        pump.start()
        try:
            yield address
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def szb(*args: str, check: bool = True) -> int:
    """Run the CLI as a user would, output shown."""
    done = subprocess.run([*SZB, *args], cwd=ROOT, env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    if check and done.returncode not in (0, 1):
        raise SystemExit(f"szb {' '.join(args)} exited {done.returncode}")
    return done.returncode


def part_one() -> None:
    console.rule("[bold]1. The embedded default: this host as the only site")
    data = WORK / "embedded"
    with broker(["--data-dir", str(data)], WORK / "embedded.log") as address:
        console.print(f"broker at {address}; submitting configs/examples/ and following each job live\n")
        for example in sorted((ROOT / "configs" / "examples").glob("*.yaml")):
            console.print(f"[bold]$ szb submit {example.relative_to(ROOT)} --wait[/]")
            code = szb("submit", str(example), "--wait", "--server", address)
            console.print(f"[dim](exit code {code}: 0 only when the job SUCCEEDED)[/]\n")
        console.print("[bold]$ szb list[/]")
        szb("list", "--server", address)


def onprem_backend() -> str:
    """Slurm when its single-node cluster starts here (root, packages present), else local."""
    script = ROOT / "scripts" / "slurm-cluster.sh"
    if os.geteuid() != 0 or shutil.which("slurmrestd") is None:
        return "local"
    done = subprocess.run([str(script), "start"], cwd=ROOT, capture_output=True, text=True)
    return "slurm" if done.returncode == 0 else "local"


def slurm_env() -> dict[str, str]:
    out = subprocess.run(
        [str(ROOT / "scripts" / "slurm-cluster.sh"), "env"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"export (\w+)=['\"]?([^'\"\n]*)", out))


def write_burst_setup(folder: Path, moto: MotoFront, ecs: EcsEndpoint, backend: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    demo = ROOT / "configs" / "demo"
    for name in ("aliyun.csv", "aws.csv"):
        shutil.copy(demo / name, folder / name)
    policy = (
        (demo / "policy.yaml")
        .read_text()
        .replace("../accelerators.yaml", str(ROOT / "configs/accelerators.yaml"))
    )
    policy = policy.replace("../regimes.yaml", str(ROOT / "configs/regimes.yaml"))
    onprem = "{}"
    if backend == "slurm":
        env = slurm_env()
        policy = policy.replace("adapter: local ", "adapter: slurm ")
        onprem = (
            f"{{url: '{env['SZB_SLURM_URL']}', token: '{env['SZB_SLURM_TOKEN']}', "
            f"user: '{env.get('SZB_SLURM_USER', 'root')}', broker_id: szb-demo}}"
        )
    (folder / "policy.yaml").write_text(policy)
    # `ops` is an operator: the closing `szb status` shows every tenant's jobs and the bursts.
    roles = {t: "operator" if t == "ops" else "tenant" for t in TOKENS}
    entries = (f"  - {{tenant: {t}, role: {roles[t]}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
    (folder / "tokens.yaml").write_text("tokens:\n" + "".join(entries))
    aws = (
        f"{{endpoint_url: '{moto.url}', access_key_id: AKIDDEMO, secret_access_key: demo, "
        "image_id: ami-12c6146b, live_prices: false, heartbeat_s: 2}"
    )
    ali = (
        f"{{endpoint: '{ecs.address}', protocol: http, access_key_id: demo-ak, "
        "access_key_secret: demo-secret, image_id: m-szb-base, live_prices: false, heartbeat_s: 2}"
    )
    (folder / "broker.yaml").write_text(
        textwrap.dedent(f"""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {{poll_interval_s: 0.3}}
        sites:
          shangzhuang-onprem: {onprem}
          aliyun-cn-beijing: {ali}
          aws-us-east-1: {aws}
        """)
    )
    return folder / "broker.yaml"


class EmulatedInstances:
    """Boots each instance the emulated clouds create: runs its UserData as a local process."""

    def __init__(self, moto: MotoFront, ecs: EcsCloud, folder: Path) -> None:
        self.moto, self.ecs, self.folder = moto, ecs, folder
        self.booted: set[str] = set()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EmulatedInstances:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()

    def _boot(self, instance_id: str, user_data: str) -> None:
        workdir = self.folder / instance_id
        env = {**os.environ, "SZB_NO_POWEROFF": "1", "SZB_WORKDIR": str(workdir)}
        self.procs.append(
            subprocess.Popen(
                ["sh", "-c", user_data],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.booted.add(instance_id)

    def _run(self) -> None:
        ec2 = boto3.client(
            "ec2",
            endpoint_url=self.moto.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDDEMO",
            aws_secret_access_key="demo",
        )
        while not self.stop.wait(0.3):
            for iid in list(self.ecs.instances):
                if iid not in self.booted and self.ecs.user_data.get(iid):
                    self._boot(iid, base64.b64decode(self.ecs.user_data[iid]).decode())
            try:
                reservations = ec2.describe_instances(
                    Filters=[{"Name": "instance-state-name", "Values": ["running"]}]
                )["Reservations"]
            except Exception:  # the emulator is shutting down
                continue
            for res in reservations:
                for inst in res["Instances"]:
                    iid = inst["InstanceId"]
                    if iid in self.booted:
                        continue
                    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
                    value = attr.get("UserData", {}).get("Value")
                    if value:
                        self._boot(iid, base64.b64decode(value).decode())


def gpu_job(name: str, accels: list[str], *, max_wait_s: int, seconds: float = 4.0) -> job_pb2.JobSpec:
    code = f"import time, os; time.sleep({seconds}); print('{name} done on', os.uname().nodename)"
    return job_pb2.JobSpec(
        name=name,
        command=["python3", "-c", code],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        max_wait=duration_pb2.Duration(seconds=max_wait_s),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=accels)),
        labels={"demo": "burst"},
    )


def live_table(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    md: tuple[tuple[str, str], ...],
    ids: list[str],
    impatient: set[str],
) -> Table:
    table = Table(title="Peak on a 4-GPU on-prem site (clouds emulated)")
    for col in ("JOB", "MAX WAIT", "STATE", "SITE", "MESSAGE"):
        table.add_column(col)
    for job_id in ids:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md).job
        state = state_from_proto(job.state).value
        site = job.site or "-"
        if site.startswith(CLOUDS):
            site += " [dim](emulated)[/]"
        table.add_row(
            job.spec.name,
            "1 min" if job_id in impatient else "1 day",
            f"[{STYLE[state]}]{state}[/]",
            site,
            escape(job.message[:70]),
        )
    return table


def peak_summary(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    md: tuple[tuple[str, str], ...],
    ids: list[str],
    impatient: set[str],
) -> str:
    """Where the impatient and the patient jobs ran, counted from the broker's own answers."""
    clouds = {True: 0, False: 0}
    for job_id in ids:
        site = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md).job.site
        clouds[job_id in impatient] += site.startswith(CLOUDS)
    n_imp, n_pat = len(impatient), len(ids) - len(impatient)
    return (
        f"\nDeadline order: impatient jobs first. Impatient: {n_imp - clouds[True]} on-prem, {clouds[True]} "
        f"burst to a cloud (no on-prem start within their minute); patient: {n_pat - clouds[False]} "
        f"on-prem, {clouds[False]} burst (they waited for on-prem)"
    )


def part_two() -> None:
    console.rule("[bold]2. Overflow bursting at peak load")
    backend = onprem_backend()
    console.print(
        f"on-prem site: [bold]{'Slurm (single-node cluster)' if backend == 'slurm' else 'local executor'}[/]"
        + ("" if backend == "slurm" else " [dim](Slurm is not installed or cannot start here)[/]")
    )
    moto = MotoFront.start()
    ecs_endpoint = EcsEndpoint.start(credentials=ECS_KEYS)
    ecs = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    ecs_endpoint.handler = ecs
    console.print(
        f"clouds: aws-us-east-1 -> moto at {moto.url} [dim](emulated)[/], "
        f"aliyun-cn-beijing -> ECS endpoint at {ecs_endpoint.address} [dim](emulated)[/]"
    )
    folder = WORK / "burst"
    shutil.rmtree(folder, ignore_errors=True)
    config = write_burst_setup(folder, moto, ecs_endpoint, backend)
    md = (("authorization", f"Bearer {TOKENS['pku-nlp']}"),)
    try:
        with (
            broker(["--config", str(config)], WORK / "burst.log") as address,
            EmulatedInstances(moto, ecs, folder / "instances"),
            grpc.insecure_channel(address) as channel,
        ):
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            console.print(
                "\n[bold]A job the export rules refuse:[/] pku-nlp (China, group D:5) asks for H100, "
                "which only the US-operated site has"
            )
            try:
                stub.SubmitJob(
                    pb.SubmitJobRequest(job=gpu_job("h100-pretrain", ["H100"], max_wait_s=3600)), metadata=md
                )
            except grpc.RpcError as err:
                console.print(f"[red]refused[/] {escape(str(describe_rpc_error(err)))}")
            console.print(
                "\n[bold]The peak:[/] 10 one-GPU jobs (A800 on-prem or A10/A10G in a cloud), "
                "alternately impatient (max_wait 1 min) and patient (1 day)"
            )
            reqs = [
                pb.SubmitJobRequest(
                    job=gpu_job(f"peak-{i:02d}", ["A800", "A10", "A10G"], max_wait_s=60 if i % 2 else 86400)
                )
                for i in range(10)
            ]
            resp = stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=md)
            ids = [r.job.id for r in resp.responses]
            impatient = {ids[i] for i in range(10) if i % 2}
            deadline = time.monotonic() + 120
            with Live(live_table(stub, md, ids, impatient), console=console, refresh_per_second=4) as live:
                while time.monotonic() < deadline:
                    live.update(live_table(stub, md, ids, impatient))
                    states = {
                        state_from_proto(stub.GetJob(pb.GetJobRequest(id=i), metadata=md).job.state).value
                        for i in ids
                    }
                    if states <= TERMINAL:
                        # The table above was read before these states: show the final ones, or a
                        # job that ended in between stays RUNNING in the printed table.
                        live.update(live_table(stub, md, ids, impatient))
                        break
                    time.sleep(0.5)
            console.print(peak_summary(stub, md, ids, impatient))
            sites = {i: stub.GetJob(pb.GetJobRequest(id=i), metadata=md).job.site for i in ids}
            burst = [i for i in ids if sites[i].startswith(CLOUDS)]
            shown = burst[0] if burst else ids[9]
            console.print(
                f"\n[bold]$ szb watch {shown}[/]  [dim](an impatient job: its decision and burst)[/]"
            )
            szb("watch", shown, "--server", address, "--token", TOKENS["pku-nlp"])
            console.print("\n[bold]$ szb status[/]")
            szb("status", "--server", address, "--token", TOKENS["ops"])
            console.print("\n[bold]$ szb spend[/]")
            szb("spend", "--server", address, "--token", TOKENS["pku-nlp"])
    finally:
        moto.stop()
        ecs_endpoint.stop()
        if backend == "slurm":
            subprocess.run(
                [str(ROOT / "scripts" / "slurm-cluster.sh"), "stop"], cwd=ROOT, capture_output=True
            )


def main() -> int:
    WORK.mkdir(exist_ok=True)
    shutil.rmtree(WORK / "embedded", ignore_errors=True)
    part_one()
    part_two()
    console.rule("[bold green]demo finished")
    console.print(f"broker logs: {WORK}/embedded.log, {WORK}/burst.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
