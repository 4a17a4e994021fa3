"""Instances of the cloud doubles that really boot: each runs the UserData the broker gave it.

`Instances` watches moto (EC2, and libcloud's EC2 driver) and the ECS double. A new instance
runs its UserData as a local process (``sh -c``, ``SZB_NO_POWEROFF=1`` in its own folder);
whatever it prints becomes the instance's console output, as cloud-init copies a user script's
output to the serial console. When the script ends the machine "powers off": an EC2 instance
stops or terminates as its InstanceInitiatedShutdownBehavior says, an ECS instance is
`Stopped`. An instance the cloud terminated or deleted has its process killed, as a real VM
would vanish. Every instance ever created is remembered with the attempt it was made for.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront

_ATTEMPT = re.compile(r"^# Shangzhuang broker bootstrap: job (\S+), attempt (\S+)$", re.M)
GONE_EC2 = ("shutting-down", "terminated")


@dataclass
class Booted:
    cloud: str
    instance_id: str
    attempt: str
    proc: subprocess.Popen[str]
    reader: threading.Thread
    powered_off: bool = False


@dataclass
class Instances:
    """Boot, power off and kill the doubles' instances; `attempts` maps instance → attempt."""

    moto: MotoFront
    ecs: EcsCloud
    folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, str] = field(default_factory=dict)
    booted: dict[str, Booted] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Instances:
        self._ec2 = boto3.client(
            "ec2",
            endpoint_url=self.moto.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDBOOT",
            aws_secret_access_key="boot",
        )
        self._thread = threading.Thread(target=self._run, name="instances", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for booted in self.booted.values():
            _kill(booted.proc)

    def running(self) -> list[str]:
        """Instances whose UserData process is still running."""
        return [iid for iid, b in list(self.booted.items()) if b.proc.poll() is None]

    # --- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._ecs_pass()
                self._ec2_pass()
            except Exception as exc:  # a double shutting down; keep the last error for the report
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _ecs_pass(self) -> None:
        for iid, user_data in list(self.ecs.user_data.items()):
            inst = self.ecs.instances.get(iid)
            if iid not in self.booted and inst is not None and user_data:
                self._boot("ecs", iid, base64.b64decode(user_data).decode())
            booted = self.booted.get(iid)
            if booted is None:
                continue
            if inst is None:  # deleted: the VM is gone
                _kill(booted.proc)
            elif booted.proc.poll() is not None and not booted.powered_off:
                booted.powered_off = True
                inst["Status"] = "Stopped"

    def _ec2_pass(self) -> None:
        reply = self._ec2.describe_instances()
        for res in reply["Reservations"]:
            for inst in res["Instances"]:
                iid, state = inst["InstanceId"], inst["State"]["Name"]
                booted = self.booted.get(iid)
                if booted is None:
                    if state == "running" and not self._boot_ec2(iid):
                        continue
                    booted = self.booted.get(iid)
                    if booted is None:
                        continue
                if state in GONE_EC2 or state in ("stopping", "stopped"):
                    _kill(booted.proc)
                    booted.powered_off = True
                elif booted.proc.poll() is not None and not booted.powered_off:
                    booted.powered_off = True
                    self._power_off_ec2(iid)

    def _boot_ec2(self, iid: str) -> bool:
        attr = self._ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        value = attr.get("UserData", {}).get("Value")
        if not value:
            return False
        self._boot("ec2", iid, base64.b64decode(value).decode())
        return True

    def _power_off_ec2(self, iid: str) -> None:
        # A terminated VM has no OS left to power off; moto would "stop" it anyway (EC2 refuses).
        now = self._ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        if now["State"]["Name"] not in ("pending", "running"):
            return
        attr = self._ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior"
        )
        if attr.get("InstanceInitiatedShutdownBehavior", {}).get("Value") == "terminate":
            self._ec2.terminate_instances(InstanceIds=[iid])
        else:
            self._ec2.stop_instances(InstanceIds=[iid])

    def _boot(self, cloud: str, iid: str, script: str) -> None:
        attempt = attempt_of(script)
        self.attempts[iid] = attempt
        workdir = self.folder / iid
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.extra_env, "SZB_NO_POWEROFF": "1", "SZB_WORKDIR": str(workdir)}
        proc = subprocess.Popen(
            ["sh", "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        console = self.ecs.console if cloud == "ecs" else self.moto.console
        reader = threading.Thread(target=_pump, args=(proc, console, iid), daemon=True)
        reader.start()
        self.booted[iid] = Booted(cloud, iid, attempt, proc, reader)


def attempt_of(script: str) -> str:
    """The attempt a UserData script was rendered for (from its first comment line)."""
    match = _ATTEMPT.search(script)
    return match.group(2) if match else ""


def _pump(proc: subprocess.Popen[str], console: dict[str, str], iid: str) -> None:
    """What the script prints goes to the instance's console output."""
    assert proc.stdout is not None
    console.setdefault(iid, "")
    for line in proc.stdout:
        console[iid] = console[iid] + f"[cloud-init] {line}"


def _kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
