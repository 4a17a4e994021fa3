"""One attempt as one Slurm batch job: the script and the job description slurmrestd takes.

``--partition``, ``--account``/``--qos`` (the tenant's), ``--gres=gpu:<type>:<n>``, cpus,
memory, a time limit derived from the runtime estimate (x ``time_limit_factor``, at least
``min_time_limit_minutes``), the spec's env, the working directory, and stdout+stderr in
``<output_dir>/<token>.<key>.<job id>.out``, the exit code in ``<token>.<key>.<job id>.rc`` (the
cluster's shared filesystem: the broker reads the files of the job it follows; `<key>` is secret:
`_filekey`). A container image runs through the configured ``container_runtime`` prefix
(``apptainer exec IMAGE argv…``); a plain command runs as the shell-quoted argv. The job's name
(``szb.<job>.<attempt>``) and comment (``szb:broker=…;szb:job=…;szb:attempt=…;szb:token=…``)
carry the broker's marks.
"""

from __future__ import annotations

import glob
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import read_file_chunk, read_tail
from adapters.slurm._config import PartitionConfig
from adapters.slurm._filekey import FileKey
from adapters.slurm._records import LIMIT_MARK, LOG_TAIL_BYTES, decode_marks, encode_marks, slurm_number
from broker.model import AttemptState, AttemptStatus, LaunchRequest

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ScriptSettings:
    broker_id: str
    output_dir: Path
    workdir: str
    container_runtime: Sequence[str] = ()
    environment: Mapping[str, str] | None = None
    time_limit_factor: float = 1.5
    min_time_limit_min: int = 1
    file_key: FileKey | None = None  # None (tests of the script alone): names of the token alone


JOB_ID_SLOT = "{SLURM_JOB_ID}"
"""A job id in a path the script writes: the shell's ``$SLURM_JOB_ID`` there (`shell_word`)."""


def token_stem(settings: ScriptSettings, token: str) -> str:
    """`<token>.<key>` (see `_filekey`); the token alone without a key."""
    return settings.file_key.stem(token) if settings.file_key is not None else token


def file_stem(settings: ScriptSettings, token: str, job_id: str) -> str:
    """`<token>.<key>.<job id>`, the start of the names of one Slurm job's own files: a second job of
    the attempt (a deposed leader's late submit) has files of its own, never the first one's."""
    return f"{token_stem(settings, token)}.{job_id}" if settings.file_key is not None else token


def shell_word(path: Path) -> str:
    """`path` quoted for the batch script, its `JOB_ID_SLOT` (in the file name) the job's own id."""
    head, slot, tail = str(path).rpartition(JOB_ID_SLOT)
    if not slot:
        return shlex.quote(tail)
    return shlex.quote(head) + '"$SLURM_JOB_ID"' + (shlex.quote(tail) if tail else "")


def output_file(settings: ScriptSettings, token: str, job_id: str) -> Path:
    """Job `job_id`'s output, which its script creates itself (never one that is there already)."""
    return settings.output_dir / f"{file_stem(settings, token, job_id)}.out"


def job_output(settings: ScriptSettings, job: Mapping[str, Any]) -> Path | None:
    """The output file of the job a slurmrestd record describes, by the token in its marks."""
    token = decode_marks(job.get("comment")).get("token")
    return output_file(settings, token, str(job.get("job_id"))) if token else None


def slurm_output_file(settings: ScriptSettings, token: str) -> Path:
    """Slurm's StdOut for the job (``%j``: each job's own): `scontrol show job` shows its name to every
    user, so it gets only what comes before the script's own output file is open (and slurmstepd's)."""
    return settings.output_dir / f"{token}.slurm.%j.out"


def exit_code_file(settings: ScriptSettings, token: str, job_id: str) -> Path:
    return settings.output_dir / f"{file_stem(settings, token, job_id)}.rc"


def started_file(settings: ScriptSettings, token: str) -> Path:
    """Where the batch script writes its Slurm job id as it starts (`_ledger`): one per token."""
    return settings.output_dir / f"{token_stem(settings, token)}.started"


def launch_hint(settings: ScriptSettings, user: str) -> str:
    """What a job that Slurm could not launch needs from the site's directories."""
    return (f"output_dir {settings.output_dir} must be a directory on the nodes that {user} can write, "
            f"and workdir {settings.workdir} one it can enter")


def read_exit_code(settings: ScriptSettings, token: str, job_id: str, owner: int) -> int | None:
    """The exit code job `job_id`'s batch script recorded, when it ran to its end (as the uid `owner`)."""
    try:  # the job's user can write output_dir: a link or FIFO there reads as no file
        data = read_file_chunk(exit_code_file(settings, token, job_id), 0, 32, owner)
    except OSError:
        return None
    text = (data or b"").decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def own_path(settings: ScriptSettings) -> str:
    """The PATH the batch script's own commands (mv, cat, tee, hostname, srun) are looked up in:
    the site's PATH, then the standard one. Never the job's: it may lack /bin (``/opt/conda/bin``)."""
    site = (settings.environment or {}).get("PATH", "")
    return ":".join(p for p in (site, DEFAULT_PATH) if p)


def time_limit_minutes(request: LaunchRequest, settings: ScriptSettings) -> int:
    seconds = request.spec.runtime_estimate.total_seconds() * settings.time_limit_factor
    return max(settings.min_time_limit_min, math.ceil(seconds / 60))


GANG_PORT = 29500
"""MASTER_PORT of a gang unless the job's env sets one (PyTorch's default)."""


def rank_exit_file(settings: ScriptSettings, token: str, job_id: str, rank: int) -> Path:
    return settings.output_dir / f"{file_stem(settings, token, job_id)}.rank{rank}.rc"


SLURM_STOPPED = ("TIMEOUT", "DEADLINE")
"""Causes (`stop_cause`) of a gang whose ranks Slurm stopped all together."""


def first_failed_rank(
    settings: ScriptSettings, token: str, job_id: str, owner: int
) -> tuple[int, int] | None:
    """(rank, exit code) of the gang's rank that failed first, from the ranks' exit files.

    srun stops the other ranks when one fails, and they exit too (143 after SIGTERM, say), so the
    job's own exit code is often a stopped rank's: the first non-zero file written is the cause.
    """
    prefix = f"{file_stem(settings, token, job_id)}.rank"
    failed = []
    for path in settings.output_dir.glob(f"{glob.escape(prefix)}*.rc"):
        rank = path.name[len(prefix):-len(".rc")]
        try:  # a link or FIFO the job put there reads as no file (a FIFO would block forever)
            data, written = read_file_chunk(path, 0, 32, owner), path.stat().st_mtime_ns
        except OSError:
            continue
        code = (data or b"").decode("ascii", "replace").strip()
        if rank.isdigit() and code.isdigit() and int(code) != 0:
            failed.append((written, int(rank), int(code)))
    return min(failed)[1:] if failed else None


def name_failed_rank(
    status: AttemptStatus, settings: ScriptSettings, job: Mapping[str, Any], owner: int
) -> AttemptStatus:
    """A failed gang's status with the rank that failed first and its exit code ("rank 1 of 2: …"),
    as a cloud gang's, from the rank files of the uid `owner`; any other status as it is."""
    nodes = int(slurm_number(job.get("node_count")) or 1)
    token = decode_marks(job.get("comment")).get("token")
    if status.state is not AttemptState.FAILED or nodes <= 1 or not token:
        return status
    if status.cause.startswith(SLURM_STOPPED):
        return status  # Slurm stopped every rank: none of them is the cause
    job_id = str(job.get("job_id"))
    hit = first_failed_rank(settings, token, job_id, owner)
    if hit is None:
        return status
    rank, code = hit
    message = f"rank {rank} of {nodes}: {status.message}"
    own_out = settings.output_dir / f"{file_stem(settings, token, job_id)}.rank{rank}.out"
    own = read_tail(own_out, LOG_TAIL_BYTES // 2, owner).strip()
    tail = status.log_tail
    if own and f"{rank}: {own.splitlines()[-1]}" not in tail:  # srun lost its last lines
        tail = f"{tail.rstrip()}\n--- rank {rank}'s own output (tail) ---\n{own}\n".lstrip()
    return status.model_copy(update={"exit_code": code, "message": message, "log_tail": tail})


def gang_command(argv: Sequence[str], nodes: int, settings: ScriptSettings, token: str) -> str:
    """Run argv once per node with srun; every rank gets its rank, the world size and the master.

    The batch script runs on the first node, so its host name is the master address. Each
    rank writes its own exit code (``<stem>.rank<N>.rc``) and output (``<stem>.rank<N>.out``, `file_stem`),
    and the job's output lines are labelled with the rank; srun fails the job when any rank
    fails and stops the others (--kill-on-bad-exit).
    """
    rank_rc = shell_word(settings.output_dir / f"{file_stem(settings, token, JOB_ID_SLOT)}.rank")
    per_rank = (
        f"szb_path={shlex.quote(own_path(settings))}; "  # (a shell of its own: the script's is not seen)

        # Slurm's SIGTERM (a time limit: reclaim's grace) goes to every process of the rank. The
        # rank's own shells outlive it (`:`, a handler, is not passed on to the command, which
        # gets SIGTERM as it is and may trap it) and its tee ignores it: a shell killed by it was
        # a failed rank to --kill-on-bad-exit, which then killed the others before their
        # handlers ran, and the rank's exit code would be lost.
        "trap : TERM; "
        'SZB_NODE_RANK=$SLURM_NODEID NODE_RANK=$SLURM_NODEID RANK=$SLURM_PROCID LOCAL_RANK=0; '
        "export SZB_NODE_RANK NODE_RANK RANK LOCAL_RANK; "
        # The rank's output also goes to its own file: srun may stop forwarding it once a rank
        # fails (--kill-on-bad-exit), losing the failed rank's last lines from the job's output.
        'rc_file=' + rank_rc + '"$SLURM_PROCID".rc; '
        '{ trap : TERM; "$@"; echo $? > "$rc_file"; } 2>&1 | '
        "(trap '' TERM; PATH=$szb_path exec tee " + rank_rc + '"$SLURM_PROCID".out); '
        'rc=$(PATH=$szb_path cat "$rc_file" 2>/dev/null); exit "${rc:-1}"'
    )
    return (
        # Slurm's SIGTERM at a time limit reaches the batch shell and srun too: taken by srun, it
        # ends the step at once ("forcing job termination"); ignored here (and so by srun, which
        # inherits it), the ranks stop as they choose, within Slurm's KillWait.
        "trap '' TERM\n"
        f"SZB_NNODES={nodes} WORLD_SIZE={nodes} SZB_MASTER_ADDR=$(PATH=$szb_path hostname)\n"
        "MASTER_ADDR=$SZB_MASTER_ADDR MASTER_PORT=${MASTER_PORT:-" + str(GANG_PORT) + "}\n"
        "export SZB_NNODES WORLD_SIZE SZB_MASTER_ADDR MASTER_ADDR MASTER_PORT\n"
        # srun by its full name: run under the script's PATH it would hand that to the ranks.
        'szb_srun=$(PATH=$szb_path:$PATH; command -v srun || echo srun)\n'
        f'"$szb_srun" --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 --label '
        f"/bin/sh -c {shlex.quote(per_rank)} szb-rank {shlex.join(argv)}"
    )


def batch_script(request: LaunchRequest, settings: ScriptSettings) -> str:
    """The job's shell script: run the command (in the container runtime, over the gang's nodes)."""
    spec = request.spec
    argv = [*settings.container_runtime, spec.image, *spec.command] if spec.image else list(spec.command)
    rc_file = shell_word(exit_code_file(settings, request.token, JOB_ID_SLOT))
    started = shlex.quote(str(started_file(settings, request.token)))
    output = shell_word(output_file(settings, request.token, JOB_ID_SLOT))
    # The exit code also goes to <token>.<key>.<job id>.rc: it outlives slurmctld's MinJobAge purge,
    # so an attempt that ended while slurmrestd was unreachable is still reconciled with its code.
    # The script's own commands look in szb_path (not exported: the job never sees it), so a
    # job whose env sets a PATH without /bin still has its exit code recorded.
    nodes = spec.resources.nodes
    return (
        "#!/bin/sh\n"
        f"# Shangzhuang broker: job {request.job_id} attempt {request.attempt_id}\n"
        f"szb_path={shlex.quote(own_path(settings))}\n"
        # Its own output file, new (noclobber: O_EXCL): never one another user made first to read
        # it; when there is one the shell stops here, saying so in Slurm's StdOut.
        f"set -C\nexec > {output} 2>&1\nset +C\n"
        f'echo "$SLURM_JOB_ID" > {started}."$SLURM_JOB_ID".tmp && '
        f'PATH=$szb_path mv -f {started}."$SLURM_JOB_ID".tmp {started}\n'
        f"{gang_command(argv, nodes, settings, request.token) if nodes > 1 else shlex.join(argv)}\n"
        "rc=$?\n"
        f"echo $rc > {rc_file}.tmp && PATH=$szb_path mv -f {rc_file}.tmp {rc_file}\n"
        "exit $rc\n"
    )


def job_environment(
    request: LaunchRequest, settings: ScriptSettings, *, as_tenant_user: bool = False
) -> dict[str, str]:
    """The job's environment: a standard PATH, the site's, the job's, then the broker's SZB_* vars.

    `as_tenant_user`: the job runs as a tenant's own user (not the site's), so its files are
    made private to that user.
    """
    env = {"PATH": DEFAULT_PATH, **(settings.environment or {}), **request.spec.env,
           "SZB_JOB_ID": str(request.job_id), "SZB_ATTEMPT_ID": str(request.attempt_id),
           **request.resume_vars()}
    if request.agent_endpoint:
        env["SZB_AGENT_ENDPOINT"] = request.agent_endpoint
    if request.agent_token:
        env["SZB_AGENT_TOKEN"] = request.agent_token
    if as_tenant_user:  # its output and exit codes readable by it (and root/group), not other tenants
        env["SLURM_UMASK"] = "0027"  # slurmstepd applies it before it creates the output file
    return env


def submit_body(
    request: LaunchRequest,
    part: PartitionConfig,
    settings: ScriptSettings,
    *,
    api_version: str,
    gres_type: str | None,
    as_tenant_user: bool = False,
) -> dict[str, Any]:
    """The ``job/submit`` payload for one attempt (version-specific where marked).

    `as_tenant_user`: submitted as the tenant's own user, not the site's (see `job_environment`).
    """
    spec = request.spec
    nodes = spec.resources.nodes
    script = batch_script(request, settings)
    env = job_environment(request, settings, as_tenant_user=as_tenant_user)
    limit = time_limit_minutes(request, settings)
    # (the limit set here is marked: a TIMEOUT at another limit was set by an administrator)
    marks = {"broker": settings.broker_id, "job": str(request.job_id),
             "attempt": str(request.attempt_id), "token": request.token, LIMIT_MARK: str(limit)}
    job: dict[str, Any] = {
        "name": f"szb.{request.job_id}.{request.attempt_id}"[:200],
        "comment": encode_marks(marks),
        "partition": part.name,
        "cpus_per_task": max(1, math.ceil(spec.resources.cpus)),
        "memory_per_node": max(1, math.ceil(spec.resources.memory_gb * 1024)),
        "time_limit": limit,
        "requeue": False,  # the broker decides about retries, not Slurm
        "current_working_directory": settings.workdir,
        "standard_output": str(slurm_output_file(settings, request.token)),
    }
    # The tenant's account (and QOS) let Slurm's own fair share and limits see who runs this.
    if request.account:
        job["account"] = request.account
    if request.qos:
        job["qos"] = request.qos
    if nodes > 1:  # one Slurm job over N nodes (--nodes N), one task per node
        job["tasks"] = nodes
        job["tasks_per_node"] = 1
    count = spec.accelerator_count
    gres = f"gpu:{gres_type}:{count}" if gres_type else f"gpu:{count}"
    # version-specific: environment and gres encoding
    if api_version == "v0.0.38":
        # 22.05 ignores "requeue": false (the job keeps the cluster's JobRequeue=1, so a node
        # failure requeues it inside Slurm, unseen by the broker); only "no_requeue" clears it.
        job["no_requeue"] = True
        job["environment"] = env
        if count:
            job["gres"] = gres
        if nodes > 1:
            job["nodes"] = [nodes, nodes]
    else:
        job["environment"] = [f"{k}={v}" for k, v in env.items()]
        if nodes > 1:
            job["minimum_nodes"] = job["maximum_nodes"] = nodes
        if count:
            job["tres_per_node"] = f"gres/{gres}"
    return {"script": script, "job": job}
