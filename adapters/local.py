"""The embedded default backend: run jobs as processes on this host.

A declared accelerator inventory (e.g. 8 A800 slots) stands in for on-prem capacity. Each
attempt has a record folder (`<data_dir>/local/<attempt>/`, the broker's alone) holding its
slots, its runner's pid, its output and, once done, its exit code, so a restarted broker
re-attaches to jobs that kept running and learns how those that ended, ended. The job itself
runs sandboxed (`adapters._sandbox`): its own user and group, folder, environment and limits.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters._local_cleanup import remove_owned, seal
from adapters._local_launch import launch_claim, prepare_launch, start_runner
from adapters._local_offers import UNSUPPORTED, local_offers
from adapters._local_records import (
    boot_id,
    exit_status,
    group_alive,
    inventory_of,
    kill_leftovers,
    max_output_bytes,
    output_tail,
    process_identity,
    read_meta,
    runner_alive,
    runner_pid,
    safe_name,
    signal_group,
    started_at,
    stop_deadline,
    write_json,
)
from adapters._local_retention import Retention, seen_ended
from adapters._sandbox import Sandbox
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

CPU_PARTITION = "cpu"


class LocalAdapter:
    """Subprocess executor with a fixed accelerator inventory.

    Config: `data_dir` (required), `accelerators` ({model: slots}), `cpus` (default: host
    cores), `price_per_accelerator_hour`, `price_per_cpu_hour`, `currency`,
    `cancel_grace_s` (SIGTERM → SIGKILL), `max_output_bytes` (per attempt, default 64 MiB);
    the sandbox's `run_as` (default `szb-job`), `job_root`, `job_gids`, `pass_env` and `limits`.
    """

    def __init__(self, site: SiteId, config: Mapping[str, Any]) -> None:
        self.site = site
        if "data_dir" not in config:
            raise ConfigError(site, "MissingDataDir", "local adapter needs data_dir")
        self.sandbox = Sandbox.from_config(site, config, Path(config["data_dir"]))
        for warning in self.sandbox.warnings:
            log.warning("%s", warning)
        if self.sandbox.user is not None:
            log.info("local site %s: jobs run under a private uid and gid each (USER %s), in %s; "
                     "limits: %s", site, self.sandbox.user.name, self.sandbox.job_root,
                     self.sandbox.limits)
        self.root = Path(config["data_dir"]) / "local"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.inventory, self.cpus = inventory_of(config)
        self.accel_price = float(config.get("price_per_accelerator_hour", 0.0))
        self.cpu_price = float(config.get("price_per_cpu_hour", 0.0))
        self.currency = str(config.get("currency", "CNY"))
        self.grace_s = float(config.get("cancel_grace_s", 5.0))
        self.max_output = max_output_bytes(site, config)
        self._cores = sorted(os.sched_getaffinity(0))
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping: set[str] = set()  # attempts this process is stopping now (preempt)
        # Live attempts by token, kept up to date as this process starts and ends them; the
        # folders are read here and at each reconciliation (`_find_live`), past those known over.
        self._live: dict[str, dict[str, Any]] = {}
        self._over: set[str] = set()
        self._find_live()
        self.retention = Retention.from_config(site, self.root, config, self.sandbox.job_root)
        self.retention.prune(time.time(), self._is_live)

    # Capability and capacity -------------------------------------------------------------

    def unsupported(self) -> Mapping[Capability, str]:
        return UNSUPPORTED

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """A reloaded policy's partitions: running jobs keep their slots, new starts fit the new size."""
        with self._lock:
            self.inventory, self.cpus = inventory_of(config)

    def _is_live(self, path: Path) -> bool:
        # A cancelled attempt is live until its runner ended: a broker killed during the
        # cancel's grace period left it running, and it holds its slots until it is stopped.
        if (path / "exit_code").exists():
            return False
        child = self._children.get(path.name)
        if child is not None:
            return child.poll() is None
        return self._runner(path) is not None

    def _runner(self, path: Path) -> int | None:
        """The pid of the attempt's runner while that process still runs (None: it ended)."""
        meta = read_meta(path)
        pid, identity = meta.get("pid"), meta.get("runner")
        if not isinstance(pid, int):  # the broker died before recording it: the runner did
            pid, identity = runner_pid(path), None
        return pid if isinstance(pid, int) and runner_alive(pid, identity) else None

    def _kill_leftovers(self, path: Path) -> None:
        """The attempt is over (ended, lost or stopped): what the job still runs must not run on
        (nothing survives a reboot, and a pid of then is another's)."""
        meta = read_meta(path)
        identity = meta.get("runner")
        if isinstance(identity, str) and identity.split(":")[0] != boot_id():
            return seal(path)  # (nothing of it runs after a reboot; its folder must not stay open)
        uid = meta.get("gid") if self.sandbox.user is not None else None
        if isinstance(uid, int):
            with self._lock:
                self._in_use()  # forgets attempts that ended
                taken = {m.get("gid") for name, m in self._live.items() if name != path.name}
            if uid in taken:
                # The job's processes all ended and its id went to a later attempt, which
                # a kill of "every process of that uid" would end instead.
                return seal(path)
        pid = meta.get("pid")
        attempt = meta.get("attempt_id")
        kill_leftovers(uid if isinstance(uid, int) else None, pid if isinstance(pid, int) else None,
                       identity if isinstance(identity, str) else None,
                       attempt if isinstance(attempt, str) else None)
        if isinstance(uid, int):  # before its id is handed out again, nothing of it stays readable
            with self._lock:  # (unless a submit gave the id, free once its processes ended, anew)
                if uid not in {m.get("gid") for name, m in self._live.items() if name != path.name}:
                    remove_owned(uid)
        seal(path)  # (its runner seals it on a normal end, not when killed at a cancel's grace)

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
            holding = tuple(self._live)  # `_in_use` dropped the ended ones
        parts = []
        for name, total in sorted(self.inventory.items()):
            hours_left = sum(
                len(m.get("slots", [])) * max(0.0, m.get("ends_at", 0) - now.timestamp()) / 3600
                for m in live
                if m.get("accelerator") == name
            )
            parts.append(PartitionCapacity(name=name, accelerator=name, total=total,
                                           free=max(0, total - len(used[name])),
                                           running_accelerator_hours_left=hours_left))
        # The CPU pool's units are CPUs: CPU-hours its jobs have left (their estimates) give the
        # wait a new CPU job expects there, as accelerator-hours do for the partitions above.
        cpu_hours_left = sum(
            float(m.get("cpus", 0)) * max(0.0, m.get("ends_at", 0) - now.timestamp()) / 3600
            for m in live
            if m.get("accelerator") is None
        )
        parts.append(
            PartitionCapacity(
                name=CPU_PARTITION,
                accelerator=None,
                total=int(self.cpus),
                free=max(0, int(self.cpus - cpus_used)),
                running_accelerator_hours_left=cpu_hours_left,
            )
        )
        return CapacitySnapshot(site=self.site, taken_at=now, partitions=tuple(parts), started=holding,
                                started_complete=True)

    def offers(self, now: datetime) -> Sequence[Offer]:
        prices = (self.accel_price, self.cpu_price, self.currency)
        return local_offers(self.site, self.capacity(now), prices, self.cpus, now)

    # Lifecycle ---------------------------------------------------------------------------

    def submit(self, request: LaunchRequest) -> str:
        # Folders are named by attempt (one token per attempt), never by a token or secret.
        name = safe_name(self.site, str(request.attempt_id))
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
                # Jobs started before a reload shrank the partition may hold slots beyond it.
                left = max(0, self.inventory[accel] - len(used[accel]))
                free = [i for i in range(self.inventory[accel]) if i not in used[accel]]
                if left < count:
                    raise CapacityError(self.site, "NoFreeAccelerators",
                                        f"{left} of {self.inventory[accel]} {accel} free, need {count}")
                slots = free[:count]
            if not count and cpus_used + spec.resources.cpus > self.cpus + 1e-9:
                raise CapacityError(
                    self.site,
                    "NoFreeCpus",
                    f"{self.cpus - cpus_used:g} of {self.cpus:g} cpus free, need {spec.resources.cpus:g}",
                )
            with launch_claim(self.site, path):  # (another scheduler process may be starting it)
                if (path / "meta.json").exists():
                    return name
                meta = prepare_launch(self.sandbox, self.root, self._cores, request, path, slots, live,
                                      self.max_output)
                env = meta.pop("env")
                # Intent first: a broker killed between the spawn and the pid being recorded must
                # find this folder on its retry and not start the job a second time (the runner
                # records its own pid in runner.pid, so it is followed either way).
                write_json(path / "meta.json", meta)
                self._children[name] = start_runner(path, env)
                meta["pid"] = self._children[name].pid
                meta["runner"] = process_identity(meta["pid"])  # our unreaped child: it is the runner
                write_json(path / "meta.json", meta)
                self._live[name] = meta
        return name

    def status(self, backend_id: str) -> AttemptStatus:
        path = self.root / backend_id
        meta = read_meta(path)
        if not meta:
            raise NotFoundError(self.site, "NoSuchAttempt", f"no local attempt {backend_id!r}")
        # Liveness first: a runner that ends after this check has written its exit code by then.
        live = self._is_live(path)
        tail = output_tail(path)
        if (path / "exit_code").exists():
            self._reap(backend_id)
            self._kill_leftovers(path)  # a daemon the job left (setsid): as a batch system's cgroup
            return exit_status(meta, path, tail)
        if live:  # cancelled too, until the stop is through
            return AttemptStatus(state=AttemptState.RUNNING, log_tail=tail, started_at=started_at(meta))
        self._reap(backend_id)
        self._kill_leftovers(path)
        if (path / "cancelled").exists():
            return AttemptStatus(state=AttemptState.CANCELLED, log_tail=tail, message="cancelled")
        return AttemptStatus(
            state=AttemptState.LOST,
            log_tail=tail,
            message="the runner process ended without recording an exit code "
            "(what the job left running was killed)",
        )

    def read_log(self, backend_id: str, token: str, offset: int, limit: int) -> bytes:
        """The runner's output file (stdout and stderr together), from byte `offset`."""
        path = self.root / safe_name(self.site, backend_id)
        data = read_file_chunk(path / "output.log", offset, limit)
        if data is None:
            if not (path / "meta.json").exists():
                raise self.retention.removed(backend_id) or NotFoundError(
                    self.site, "NoSuchAttempt", f"no local attempt {backend_id!r}")
            return b""  # started, nothing written yet
        return data

    def cancel(self, backend_id: str, token: str) -> None:
        self.preempt(backend_id, token, self.grace_s)

    def preempt(self, backend_id: str, token: str, grace_s: float) -> None:
        """SIGTERM to the attempt's process group, `grace_s` to exit, then SIGKILL (`stop_deadline`)."""
        path = self.root / backend_id
        if not read_meta(path):
            return
        if not (ended := (path / "exit_code").exists()):  # (ended on its own first: its result stands)
            (path / "cancelled").touch()
        pid = None if ended else self._runner(path)
        if pid is None:
            self._kill_leftovers(path)
            return
        self._stopping.add(backend_id)
        try:
            self._stop(backend_id, pid, *stop_deadline(path, grace_s, time.time()))
        finally:
            self._stopping.discard(backend_id)

    def _stop(self, backend_id: str, pid: int, stop_by: float, signalled: bool) -> None:
        if not signalled:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, stop_by - time.time())
        child = self._children.get(backend_id)
        # The runner leads the group: wait for the whole group, not the runner alone, since a
        # process the job started may ignore SIGTERM after the job itself died of it.
        while time.monotonic() < deadline:
            if child is not None:
                child.poll()  # reap the runner, whose zombie would keep the group alive
            if not group_alive(pid):
                break
            time.sleep(0.05)
        else:
            signal_group(pid, signal.SIGKILL)
        self._reap(backend_id)
        self._kill_leftovers(self.root / backend_id)  # (what left the group: a setsid daemon)

    def _find_live(self) -> None:
        """Take in live attempts another process started in this data dir: a scheduler elected
        after the leader that started them (HA) counted only what ran when it booted, and placed
        jobs on slots still in use (7 jobs on 4 GPUs)."""
        present = set()
        for path in self.root.iterdir():
            name = path.name
            present.add(name)
            if name in self._live or name in self._over or not path.is_dir():
                continue
            if self._is_live(path):
                self._live[name] = read_meta(path)
            elif (path / "exit_code").exists():
                self._over.add(name)  # (a folder with no exit code yet may be one being made)
        self._over &= present  # (retention removed the others)

    def list_owned(self) -> Sequence[OwnedInstance]:
        """Attempts still running on this host (finished ones are nobody's orphans)."""
        with self._lock:
            self._find_live()
            self._in_use()
            live = dict(self._live)
            self.retention.prune(time.time(), self._is_live)  # (reconciliation calls this periodically)
        owned = []
        for token, meta in live.items():
            if token in self._stopping:
                continue  # its stop is under way here: not the reconciler's to stop again
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

    def _reap(self, token: str) -> None:  # the broker learns of the end (a poll) or ends it (a stop)
        seen_ended(self.root / token)
        child = self._children.pop(token, None)
        if child is not None:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._children[token] = child
