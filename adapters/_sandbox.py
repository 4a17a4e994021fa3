"""How the local executor confines one job: private uid and gid, folder, environment, limits.

A job runs under a private id of its own, one per attempt from ``job_gids``, as both its
uid and its gid (no supplementary groups, no passwd entry; USER and LOGNAME name ``run_as``),
in ``<job_root>/<attempt>/work``:

    <job_root>/              root, 0711   outside the data dir; nobody can list it
      <attempt>/             root:<id>, 0710 while the job runs, root-only once it ended
        work/                <id>:<id>, 0700   cwd, HOME and TMPDIR of the job

Another job, or a process a finished job left behind, has another uid and gid, so it can
neither enter this folder, read the process's /proc entries nor signal it (kill(2) compares
uids only, so a shared user would let one tenant stop another's job). Its environment is an
allow-list: PATH and LANG from the broker (plus ``pass_env``), the job's own ``env``, then
the broker's ``SZB_*`` variables. Memory and CPUs come from the request: through a cgroup
(``systemd-run --scope``: MemoryMax, CPUQuota) where systemd runs the host, else
``setrlimit`` (RLIMIT_DATA = memory) and CPU affinity (ceil(cpus) cores). A broker that is
not root can do none of the user/group part and says so at start.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import math
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import ConfigError
from broker.model import SiteId
from broker.secret_files import JobAccount, replaceable_above, untraversable

log = logging.getLogger(__name__)

DEFAULT_RUN_AS = "szb-job"
DEFAULT_JOB_GIDS = (2_000_000_000, 2_000_999_999)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_FROM_BROKER = ("PATH", "LANG")
"""The only variables of the broker's own environment a job sees (besides `pass_env`)."""
LIMITS = ("auto", "systemd", "rlimit")
DEFAULT_MAX_PROCESSES = 4096
"""Processes and threads one job may have at once (its private uid's RLIMIT_NPROC)."""
ROOT_UNSAFE_ENV = frozenset({
    "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
    "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
})
"""Besides LD_*: what glibc ignores in setuid programs, as it steers code a process loads."""
GIB = 1024**3


@dataclass(frozen=True)
class Sandbox:
    """The confinement settings of one local site, checked once at start."""

    site: SiteId
    job_root: Path
    user: JobAccount | None
    """None when the broker is not root: jobs run as the broker's own user."""
    gids: tuple[int, int]
    limits: str
    """`systemd` (cgroup v2 through systemd-run --scope) or `rlimit`."""
    pass_env: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    max_processes: int = DEFAULT_MAX_PROCESSES
    """RLIMIT_NPROC of a job under its private uid: a fork bomb must not take every pid of the host."""

    @classmethod
    def from_config(cls, site: SiteId, config: Mapping[str, Any], data_dir: Path) -> Sandbox:
        privileged = os.geteuid() == 0
        data_dir = data_dir.resolve()
        # `workdir` is the older name of the same setting.
        root = config.get("job_root") or config.get("workdir") or _default_job_root(data_dir)
        given = Path(root).absolute()
        job_root = given.resolve()
        if job_root == data_dir or data_dir in job_root.parents:
            raise ConfigError(site, "JobRootInDataDir",
                              f"job_root {job_root} must be outside the data dir {data_dir}")
        pass_env = config.get("pass_env") or ()
        if isinstance(pass_env, str) or not all(isinstance(n, str) for n in pass_env):
            raise ConfigError(site, "BadPassEnv", "pass_env must be a list of variable names")
        gids = _gid_range(site, config.get("job_gids", DEFAULT_JOB_GIDS))
        limits = _limits(site, str(config.get("limits", "auto")), privileged)
        warnings: list[str] = []
        user = None
        run_as = str(config.get("run_as") or DEFAULT_RUN_AS)
        # The embedded default must run jobs on a fresh machine: its own job user is created on
        # first start; a user the operator named is never created behind their back.
        create = bool(config.get("create_user", not config.get("run_as")))
        if privileged:
            user = _job_user(site, run_as, create=create)
        else:
            warnings.append(
                f"local site {site}: the broker runs as uid {os.geteuid()}, not root, so jobs run "
                f"as that same user: run_as ({run_as}) and private ids are not applied, and a "
                "job can read whatever this user can (the data dir, other jobs' folders, "
                "their processes); the environment allow-list, own session, working folder "
                f"outside the data dir and {limits} limits still apply"
            )
        if limits == "rlimit" and privileged and config.get("limits", "auto") == "auto":
            log.info("local site %s: no systemd on this host: memory and CPU limits use "
                     "setrlimit and CPU affinity", site)
        procs = config.get("max_processes", DEFAULT_MAX_PROCESSES)
        if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
            raise ConfigError(site, "BadMaxProcesses",
                              f"max_processes must be a whole number >= 1, not {procs!r}")
        sandbox = cls(site, job_root, user, gids, limits, tuple(pass_env), tuple(warnings), procs)
        sandbox._prepare(data_dir, given)
        if _same_filesystem(job_root, data_dir):
            log.info("local site %s: job_root %s shares a filesystem with the data dir: a job that "
                     "fills its folder fills the store's disk (README: Disk)", site, job_root)
        return sandbox

    # Folders -----------------------------------------------------------------------------

    def _prepare(self, data_dir: Path, given: Path) -> None:
        """The data dir private to the broker, the job root ready and reachable by jobs.

        `given` is job_root as configured. The default one has a predictable name in a folder
        everyone may write ($TMPDIR): a symbolic link someone else put there (before the broker
        first made it, or raced in just before mkdir) would have root chmod its target and
        create job folders in it. Only a link of root's or the broker's own is followed.
        """
        _private(self.site, data_dir)
        self.job_root.mkdir(parents=True, exist_ok=True, mode=0o711)
        link = os.lstat(given)
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, os.geteuid()):
            raise ConfigError(self.site, "JobRootNotOwned",
                              f"job_root {given} is a symbolic link owned by uid {link.st_uid}, "
                              "not by the broker's user: remove it, or set job_root to a folder "
                              "of the broker's own")
        info = os.lstat(self.job_root)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise ConfigError(self.site, "JobRootNotOwned",
                              f"job_root {self.job_root} must belong to the broker's user and not "
                              "be writable by others")
        unsafe = replaceable_above(self.job_root, {0, os.geteuid()})
        if unsafe is not None:  # (checked after mkdir: the folders above exist)
            raise ConfigError(self.site, "JobRootReplaceable",
                              f"job_root {self.job_root}: {unsafe[0]} {unsafe[1]}, so another user "
                              "could put a folder or link of their own in job_root's place; choose a "
                              "job_root whose parent folders belong to root or the broker's user")
        self.job_root.chmod(0o711 if self.user else 0o700)
        if self.user is not None:
            # A job's uid owns nothing outside its folder: it passes only where others may.
            blocked = untraversable(self.job_root, self.gids[0])
            if blocked is not None:
                raise ConfigError(self.site, "JobRootUnreachable",
                                  f"job_root {self.job_root}: jobs (not its owner) cannot "
                                  f"enter {blocked}; choose a job_root jobs can reach")

    def workdir(self, name: str, gid: int | None) -> tuple[Path, Path]:
        """Create the job's guard folder and its 0700 working folder; returns (guard, work)."""
        guard = self.job_root / name
        work = guard / "work"
        # Neither may be a link or another user's folder: root would chown and chmod whatever it
        # names (and make `work` in it). Only root, the broker or a private id own them (a launch of
        # this attempt again, after a crash, finds them owned by the id the first one picked).
        first, last = self.gids
        for folder in (guard, work):
            folder.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(folder)
            owner = info.st_uid in (0, os.geteuid()) or first <= info.st_uid <= last
            if not stat.S_ISDIR(info.st_mode) or not owner:
                raise ConfigError(self.site, "JobFolderNotOwned",
                                  f"{folder} is not a folder of the broker's own: not used")
        if self.user is not None and gid is not None:
            os.chown(guard, 0, gid, follow_symlinks=False)
            guard.chmod(0o710)
            os.chown(work, gid, gid, follow_symlinks=False)  # the attempt's id is its uid too
        work.chmod(0o700)
        return guard, work

    # Identity and environment -----------------------------------------------------------

    def pick_gid(self, in_use: Collection[int], cursor: int) -> int | None:
        """The next free private id (the job's uid and gid) at or after `cursor` (None when not root)."""
        if self.user is None:
            return None
        # A process a finished job left behind keeps its uid: never hand that uid out again.
        taken = set(in_use) | _process_uids()
        first, last = self.gids
        size = last - first + 1
        for step in range(size):
            gid = first + (cursor - first + step) % size
            if gid not in taken and not _group_exists(gid) and not _user_exists(gid):
                return gid
        raise ConfigError(self.site, "NoFreeGid", f"all {size} job_gids are in use")

    def environment(
        self,
        work: Path,
        job_env: Mapping[str, str],
        broker_vars: Mapping[str, str],
        environ: Mapping[str, str],
    ) -> dict[str, str]:
        """The job's whole environment: the allow-list, its own env, then the broker's SZB_*."""
        env = {"PATH": environ.get("PATH") or DEFAULT_PATH}
        for name in (*PASSED_FROM_BROKER[1:], *self.pass_env):
            if name in environ:
                env[name] = environ[name]
        env.update(HOME=str(work), TMPDIR=str(work))
        if self.user is not None:
            env.update(USER=self.user.name, LOGNAME=self.user.name)
        if self.limits == "systemd":
            # systemd-run and setpriv run as root with this environment before the job drops to
            # its user: a tenant's LD_PRELOAD there would run its code as root.
            job_env = {k: v for k, v in job_env.items() if not _root_unsafe(k)}
        env.update(job_env)
        env.update(broker_vars)
        return env

    # Limits -----------------------------------------------------------------------------

    def command(self, argv: Sequence[str], *, name: str, cpus: float, memory_gb: float,
                gid: int | None) -> list[str]:
        """The argv the runner starts: the job's own, wrapped in a scope under systemd."""
        if self.limits != "systemd":
            return list(argv)
        # Absolute: the job's own PATH (its env) must not choose what runs as root.
        wrapped = [
            _system_tool("systemd-run"), "--scope", "--quiet", "--collect", f"--unit=szb-{name}",
            "-p", f"MemoryMax={int(memory_gb * GIB)}", "-p", f"CPUQuota={math.ceil(cpus * 100)}%",
            "--",
        ]
        if self.user is not None and gid is not None:
            # The scope is created as root; the job itself then drops to its user and group.
            setpriv = _system_tool("setpriv")
            wrapped += [setpriv, f"--reuid={gid}", f"--regid={gid}", "--clear-groups", "--"]
        return wrapped + list(argv)

    def rlimits(self, memory_gb: float) -> dict[str, int]:
        """Resource limits the runner sets in the job process (no core dumps: they hold env)."""
        limits = {"CORE": 0}
        if self.limits == "rlimit":
            limits["DATA"] = int(memory_gb * GIB)
        if self.user is not None:  # (counted per uid: only a private one bounds the job alone)
            limits["NPROC"] = self.max_processes
        return limits


def _root_unsafe(name: str) -> bool:
    return name.startswith("LD_") or name in ROOT_UNSAFE_ENV


def _system_tool(name: str) -> str:
    return shutil.which(name, path=DEFAULT_PATH) or f"/usr/bin/{name}"


def pick_cores(cpus: float, busy: Mapping[int, int], available: Collection[int]) -> list[int]:
    """ceil(cpus) of the host's cores, least used by running local jobs first."""
    ranked = sorted(available, key=lambda c: (busy.get(c, 0), c))
    return sorted(ranked[: max(1, min(len(ranked), math.ceil(cpus)))])


def _default_job_root(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"szb-jobs-{digest}"


def _gid_range(site: SiteId, value: Any) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(site, "BadJobGids", "job_gids must be [first, last] group ids") from None
    if not 1000 <= first <= last < 2**32 - 1:
        raise ConfigError(site, "BadJobGids", "job_gids must be [first, last] with 1000 <= first <= last")
    return first, last


def _limits(site: SiteId, wanted: str, privileged: bool) -> str:
    if wanted not in LIMITS:
        raise ConfigError(site, "BadLimits", f"limits must be one of {', '.join(LIMITS)}")
    systemd = (
        privileged
        and Path("/run/systemd/system").is_dir()
        and shutil.which("systemd-run") is not None
        and shutil.which("setpriv") is not None
    )
    if wanted == "systemd" and not systemd:
        raise ConfigError(site, "NoSystemd",
                          "limits: systemd needs root, a running systemd, systemd-run and setpriv")
    if wanted == "auto":
        return "systemd" if systemd else "rlimit"
    return wanted


def _job_user(site: SiteId, name: str, *, create: bool = False) -> JobAccount:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if create and _create_user(name):
            return _job_user(site, name)
        raise ConfigError(
            site, "NoSuchUser",
            f"run_as: user {name!r} does not exist; create it (useradd --system --no-create-home "
            f"--shell /usr/sbin/nologin {name}) or set run_as to an unprivileged user",
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(site, "PrivilegedRunAs",
                          f"run_as: {name!r} is root; jobs need an unprivileged user")
    return JobAccount(name, entry.pw_uid)


def _create_user(name: str) -> bool:
    """Add `name` as a system user without a home or login shell; False when that failed."""
    argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        log.warning("could not create the job user %s: %s", name, exc)
        return False
    try:
        pwd.getpwnam(name)  # another broker starting at the same moment may have made it
    except KeyError:
        log.warning("could not create the job user %s: %s", name, done.stderr.strip())
        return False
    log.warning("created the unprivileged job user %s for local jobs (run_as)", name)
    return True


def _group_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


def _user_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _process_uids() -> set[int]:
    """The uids of the host's running processes (one stat of /proc/<pid> each)."""
    uids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                uids.add(entry.stat().st_uid)
            except OSError:
                pass  # it ended meanwhile
    return uids


def _private(site: SiteId, data_dir: Path) -> None:
    """The data dir (store, attempt records) is for the broker's user alone."""
    data_dir.mkdir(parents=True, exist_ok=True)
    info = data_dir.stat()
    if info.st_mode & 0o077:
        if info.st_uid != os.geteuid():
            raise ConfigError(site, "DataDirShared",
                              f"data dir {data_dir} is open to others and not ours to restrict")
        data_dir.chmod(0o700)
        log.warning("data dir %s was open to other users; restricted to 0700 (jobs must not "
                    "read the store)", data_dir)


def _same_filesystem(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:  # (not made yet: nothing to say)
        return False
