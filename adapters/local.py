"""The embedded default backend: run jobs as processes on this host.

A declared accelerator inventory (e.g. 8 A800 slots) stands in for on-prem capacity. Each
attempt has a record folder (`<data_dir>/local/<attempt>/`, the broker's alone) holding its
slots, its runner's pid, its output and, once done, its exit code, so a restarted broker
re-attaches to jobs that kept running and learns how those that ended, ended. The job itself
runs sandboxed (`adapters._sandbox`): its own user and group, folder, environment and limits.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters._sandbox import Sandbox, pick_cores
from adapters.base import (
    Capability,
    CapacityError,
    ConfigError,
    NotFoundError,
    UnsupportedError,
    read_file_chunk,
)
from broker.model import (
    AttemptState,
    AttemptStatus,
    CapacitySnapshot,
    LaunchRequest,
    Offer,
    OwnedInstance,
    PartitionCapacity,
    SiteId,
)

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 4096
CPU_PARTITION = "cpu"


class LocalAdapter:
    """Subprocess executor with a fixed accelerator inventory.

    Config: `data_dir` (required), `accelerators` ({model: slots}), `cpus` (default: host
    cores), `price_per_accelerator_hour`, `price_per_cpu_hour`, `currency`,
    `cancel_grace_s` (SIGTERM → SIGKILL); the sandbox's `run_as` (default `szb-job`),
    `job_root`, `job_gids`, `pass_env` and `limits` (`auto`, `systemd`, `rlimit`).
    """

    def __init__(self, site: SiteId, config: Mapping[str, Any]) -> None:
        self.site = site
        if "data_dir" not in config:
            raise ConfigError(site, "MissingDataDir", "local adapter needs data_dir")
        self.sandbox = Sandbox.from_config(site, config, Path(config["data_dir"]))
        for warning in self.sandbox.warnings:
            log.warning("%s", warning)
        if self.sandbox.user is not None:
            log.info("local site %s: jobs run as %s with a private group each, in %s; limits: %s",
                     site, self.sandbox.user.name, self.sandbox.job_root, self.sandbox.limits)
        self.root = Path(config["data_dir"]) / "local"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.inventory: dict[str, int] = {
            str(k): int(v) for k, v in dict(config.get("accelerators", {})).items()
        }
        cpus = config.get("cpus")
        # Without an explicit inventory, the policy's partitions for this site declare it.
        for part in config.get("partitions", ()):
            count = int(part.get("count_per_node", 0)) * int(part.get("nodes", 1))
            if part.get("accelerator") and count and "accelerators" not in config:
                self.inventory[str(part["accelerator"])] = (
                    self.inventory.get(str(part["accelerator"]), 0) + count
                )
            elif not part.get("accelerator") and cpus is None and part.get("cpus_per_node"):
                cpus = float(part["cpus_per_node"]) * int(part.get("nodes", 1))
        self.cpus = float(cpus if cpus is not None else (os.cpu_count() or 1))
        self.accel_price = float(config.get("price_per_accelerator_hour", 0.0))
        self.cpu_price = float(config.get("price_per_cpu_hour", 0.0))
        self.currency = str(config.get("currency", "CNY"))
        self.grace_s = float(config.get("cancel_grace_s", 5.0))
        self._cores = sorted(os.sched_getaffinity(0))
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # Live attempts by token; the folders are read once here, then kept up to date, so
        # capacity and reconciliation never rescan every attempt this host ever ran.
        self._live: dict[str, dict[str, Any]] = {}
        for path in self.root.iterdir():
            if path.is_dir() and self._is_live(path):
                self._live[path.name] = self._meta(path)

    # Capability and capacity -------------------------------------------------------------

    def unsupported(self) -> Mapping[Capability, str]:
        return {
            Capability.SPOT: "local processes are never preempted, so there is no spot market",
            Capability.CONTAINER_IMAGES: "the local executor runs commands directly, not images",
            Capability.LIVE_PRICES: "local capacity is charged at its configured shadow price",
            Capability.STOCK: "local capacity is reported through capacity(), not zone stock",
            Capability.QUEUES_JOBS: "a local process starts at once or fails; nothing queues here",
        }

    def _meta(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _is_live(self, path: Path) -> bool:
        if (path / "exit_code").exists() or (path / "cancelled").exists():
            return False
        token = path.name
        child = self._children.get(token)
        if child is not None:
            return child.poll() is None
        pid = self._meta(path).get("pid")
        if not isinstance(pid, int):  # the broker died before recording it: the runner did
            pid = _runner_pid(path)
        return isinstance(pid, int) and _pid_alive(pid)

    def _in_use(self) -> tuple[dict[str, set[int]], float, list[dict[str, Any]]]:
        slots: dict[str, set[int]] = {name: set() for name in self.inventory}
        cpus = 0.0
        live: list[dict[str, Any]] = []
        for token in list(self._live):
            if not self._is_live(self.root / token):
                del self._live[token]
                continue
            meta = self._live[token]
            live.append(meta)
            accel = meta.get("accelerator")
            if accel is None:  # accelerator jobs use their partition's cores, not the CPU pool
                cpus += float(meta.get("cpus", 0))
            if accel in slots:
                slots[accel].update(meta.get("slots", []))
        return slots, cpus, live

    def capacity(self, now: datetime) -> CapacitySnapshot:
        with self._lock:
            used, cpus_used, live = self._in_use()
        parts = []
        for name, total in sorted(self.inventory.items()):
            hours_left = sum(
                len(m.get("slots", [])) * max(0.0, m.get("ends_at", 0) - now.timestamp()) / 3600
                for m in live
                if m.get("accelerator") == name
            )
            parts.append(
                PartitionCapacity(
                    name=name,
                    accelerator=name,
                    total=total,
                    free=total - len(used[name]),
                    running_accelerator_hours_left=hours_left,
                )
            )
        parts.append(
            PartitionCapacity(
                name=CPU_PARTITION,
                accelerator=None,
                total=int(self.cpus),
                free=max(0, int(self.cpus - cpus_used)),
            )
        )
        return CapacitySnapshot(site=self.site, taken_at=now, partitions=tuple(parts))

    def offers(self, now: datetime) -> Sequence[Offer]:
        snap = self.capacity(now)
        result = []
        for part in snap.partitions:
            price = self.accel_price if part.accelerator else self.cpu_price
            result.append(
                Offer(
                    site=self.site,
                    instance_type=f"local-{part.name}",
                    accelerator=part.accelerator,
                    count=part.total if part.accelerator else 0,
                    price_per_hour=price,
                    currency=self.currency,
                    cpus=self.cpus,
                    free=part.free,
                    price_read_at=now,
                )
            )
        return result

    # Lifecycle ---------------------------------------------------------------------------

    def submit(self, request: LaunchRequest) -> str:
        # Folders are named by attempt (one token per attempt), never by a token or secret.
        name = _safe_name(self.site, str(request.attempt_id))
        path = self.root / name
        spec = request.spec
        if spec.image:
            raise UnsupportedError(
                self.site, "ImagesUnsupported", "the local executor cannot run container images"
            )
        with self._lock:
            if (path / "meta.json").exists():
                return name  # idempotent: this attempt (and so its token) already started
            accel = request.offer.accelerator if spec.accelerator_count else None
            count = spec.accelerator_count
            used, cpus_used, live = self._in_use()
            slots: list[int] = []
            if count:
                if accel not in self.inventory:
                    raise UnsupportedError(
                        self.site, "NoSuchAccelerator", f"this host has no {accel} accelerators"
                    )
                if count > self.inventory[accel]:
                    raise UnsupportedError(
                        self.site, "TooLarge", f"needs {count} {accel}, host has {self.inventory[accel]}"
                    )
                free = [i for i in range(self.inventory[accel]) if i not in used[accel]]
                if len(free) < count:
                    raise CapacityError(
                        self.site,
                        "NoFreeAccelerators",
                        f"{len(free)} of {self.inventory[accel]} {accel} free, need {count}",
                    )
                slots = free[:count]
            if not count and cpus_used + spec.resources.cpus > self.cpus + 1e-9:
                raise CapacityError(
                    self.site,
                    "NoFreeCpus",
                    f"{self.cpus - cpus_used:g} of {self.cpus:g} cpus free, need {spec.resources.cpus:g}",
                )
            path.mkdir(mode=0o700, exist_ok=True)
            meta = self._launch(request, path, slots, live)
            env = meta.pop("env")
            # Intent first: a broker killed between the spawn and the pid being recorded must
            # find this folder on its retry and not start the job a second time (the runner
            # records its own pid in runner.pid, so it is followed either way).
            _write_json(path / "meta.json", meta)
            self._children[name] = self._start_runner(path, env)
            meta["pid"] = self._children[name].pid
            _write_json(path / "meta.json", meta)
            self._live[name] = meta
        return name

    def _launch(
        self, request: LaunchRequest, path: Path, slots: list[int], live: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Prepare the job's folder and the runner's plan; returns the attempt's record."""
        spec = request.spec
        cursor = _read_int(self.root / "next_gid", self.sandbox.gids[0])
        gid = self.sandbox.pick_gid({int(m["gid"]) for m in live if m.get("gid")}, cursor)
        if gid is not None:
            (self.root / "next_gid").write_text(str(gid + 1))
        guard, work = self.sandbox.workdir(path.name, gid)
        busy: dict[int, int] = {}
        for m in live:
            for core in m.get("cores", ()):
                busy[core] = busy.get(core, 0) + 1
        cores = pick_cores(spec.resources.cpus, busy, self._cores)
        broker_vars = {
            "SZB_JOB_ID": request.job_id,
            "SZB_ATTEMPT_ID": request.attempt_id,
            "SZB_WORKDIR": str(work),
            "SZB_AGENT_ENDPOINT": request.agent_endpoint,
            "SZB_AGENT_TOKEN": request.agent_token,
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, slots)),
        }
        env = self.sandbox.environment(work, spec.env, broker_vars, os.environ)
        drop = self.sandbox.user is not None and self.sandbox.limits == "rlimit"
        plan = {
            "argv": self.sandbox.command(spec.command, name=path.name, cpus=spec.resources.cpus,
                                         memory_gb=spec.resources.memory_gb, gid=gid),
            "cwd": str(work),
            "uid": self.sandbox.user.uid if drop and self.sandbox.user else None,
            "gid": gid if drop else None,
            "rlimits": self.sandbox.rlimits(spec.resources.memory_gb),
            "cores": cores if self.sandbox.limits == "rlimit" else None,
            "seal": str(guard) if self.sandbox.user is not None else None,
        }
        (path / "launch.json").write_text(json.dumps(plan))
        return {
            "env": env,
            "pid": None,
            "job_id": request.job_id,
            "attempt_id": request.attempt_id,
            "token": request.token,
            "accelerator": request.offer.accelerator if spec.accelerator_count else None,
            "slots": slots,
            "cpus": spec.resources.cpus,
            "cores": cores,
            "gid": gid,
            "workdir": str(work),
            "started_at": time.time(),
            "ends_at": time.time() + spec.runtime_estimate.total_seconds(),
            "command": shlex.join(spec.command),
        }

    def _start_runner(self, path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        # The runner (this user) gets the job's environment only; -I keeps it from reading
        # PYTHON* variables or the job's folder, so nothing in the job env can steer it.
        return subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).with_name("_local_runner.py")), str(path)],
            env=env,
            cwd=str(path),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def status(self, backend_id: str) -> AttemptStatus:
        path = self.root / backend_id
        meta = self._meta(path)
        if not meta:
            raise NotFoundError(self.site, "NoSuchAttempt", f"no local attempt {backend_id!r}")
        tail = _tail(path / "output.log")
        exit_file = path / "exit_code"
        if exit_file.exists():
            code = int(exit_file.read_text().strip() or "1")
            self._reap(backend_id)
            if (path / "cancelled").exists():
                return AttemptStatus(state=AttemptState.CANCELLED, exit_code=code, log_tail=tail)
            state = AttemptState.SUCCEEDED if code == 0 else AttemptState.FAILED
            return AttemptStatus(state=state, exit_code=code, log_tail=tail)
        if (path / "cancelled").exists():
            return AttemptStatus(state=AttemptState.CANCELLED, log_tail=tail, message="cancelled")
        if self._is_live(path):
            return AttemptStatus(state=AttemptState.RUNNING, log_tail=tail)
        self._reap(backend_id)
        return AttemptStatus(
            state=AttemptState.LOST,
            log_tail=tail,
            message="the runner process ended without recording an exit code",
        )

    def read_log(self, backend_id: str, token: str, offset: int, limit: int) -> bytes:
        """The runner's output file (stdout and stderr together), from byte `offset`."""
        path = self.root / _safe_name(self.site, backend_id)
        data = read_file_chunk(path / "output.log", offset, limit)
        if data is None:
            if not (path / "meta.json").exists():
                raise NotFoundError(self.site, "NoSuchAttempt", f"no local attempt {backend_id!r}")
            return b""  # started, nothing written yet
        return data

    def cancel(self, backend_id: str, token: str) -> None:
        self.preempt(backend_id, token, self.grace_s)

    def preempt(self, backend_id: str, token: str, grace_s: float) -> None:
        """Stop the attempt: SIGTERM to its process group, `grace_s` to exit, then SIGKILL."""
        path = self.root / backend_id
        meta = self._meta(path)
        if not meta:
            return
        (path / "cancelled").touch()
        pid = meta.get("pid")
        if not isinstance(pid, int):
            pid = _runner_pid(path)
        if not isinstance(pid, int) or not _pid_alive(pid):
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        child = self._children.get(backend_id)
        while time.monotonic() < deadline:
            if child is not None and child.poll() is not None:
                break
            if child is None and not _pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            _signal_group(pid, signal.SIGKILL)
        self._reap(backend_id)

    def list_owned(self) -> Sequence[OwnedInstance]:
        """Attempts still running on this host (finished ones are nobody's orphans)."""
        with self._lock:
            self._in_use()
            live = dict(self._live)
        owned = []
        for token, meta in live.items():
            path = self.root / token
            owned.append(
                OwnedInstance(
                    site=self.site,
                    backend_id=path.name,
                    token=meta.get("token"),
                    job_id=meta.get("job_id"),
                    attempt_id=meta.get("attempt_id"),
                    state=AttemptState.RUNNING if self._is_live(path) else AttemptState.SUCCEEDED,
                )
            )
        return owned

    def _reap(self, token: str) -> None:
        child = self._children.pop(token, None)
        if child is not None:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._children[token] = child


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _runner_pid(path: Path) -> int | None:
    """The pid the runner wrote for itself when it started (see `adapters._local_runner`)."""
    try:
        return int((path / "runner.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _safe_name(site: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name) or name.startswith("."):
        raise ConfigError(site, "BadAttemptId", "attempt id must be 1-128 chars of [A-Za-z0-9_.-]")
    return name


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells them apart.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
