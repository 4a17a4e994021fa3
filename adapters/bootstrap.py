"""UserData: the POSIX sh script a cloud instance runs at boot to do one attempt.

The script runs the job (``docker run`` when the spec names an image, else the command
itself) with the job's env, in a session of its own (``setsid``: a job that signals its
process group cannot kill the bootstrap), reports ``started`` and a ``heartbeat`` every N
seconds to the broker's AgentService, and when the job ends:

1. keeps the result before telling anyone: one ``SZB-RESULT`` line on its stdout, which
   cloud-init copies to the instance's console output, where the broker can read it through
   the cloud's API without the agent (`result_from_console`), then ``$SZB_WORKDIR/exit_code``
   and ``result.json`` (exit code + log tail). A job that filled the disk fails only the files:
   no write on the instance's disk stops the console line or a report;
2. ships the output the broker has not acknowledged, then reports ``exit``, with retries
   (exponential backoff with jitter, at most ``report_backoff_max_s`` apart) until the broker
   acknowledges it, for at most ``report_give_up_s`` (default 30 min, well above a broker
   restart), heartbeating meanwhile. The broker's ack ends the instance, so the report waits
   for the output: while the broker is away, and up to 2 minutes while it answers that it
   cannot take it now (output it refuses for good holds nothing back);
3. only then powers the machine off (unless ``SZB_NO_POWEROFF=1``). An instance that gave up
   still holds its result in its console output; the broker reads it before it would call the
   attempt lost.

The transport lives in one shell function, ``szb_report``; it runs a python3 snippet that
POSTs JSON (`REPORT_PATH` on the agent endpoint, bearer token) and falls back to curl (no
output shipped; the log tail printable ASCII only, escaped by ``szb_tail_json``). Both
verify the broker's TLS certificate: against the CA bundle the broker put in the UserData
(``agent_ca_pem``), else against the instance's system roots.
Every report is also appended to ``$SZB_WORKDIR/reports.jsonl``. With each heartbeat (and
before the exit report) the job's new output goes to ``/v1/agent/log`` from the last offset
the broker acknowledged, for `szb logs`.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from collections.abc import Mapping
from typing import Any, TypedDict

from adapters._bootstrap_report import REPORT_PY as _REPORT_PY
from adapters._gang import GANG_PORT
from broker.model import AttemptState, AttemptStatus, LaunchRequest

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_REPORT_BACKOFF_MAX_S",
    "DEFAULT_REPORT_GIVE_UP_S",
    "REPORT_PATH",
    "RESULT_MARK",
    "BootstrapOptions",
    "bootstrap_options",
    "render_user_data",
    "result_from_console",
]

DEFAULT_HEARTBEAT_S = 30
DEFAULT_REPORT_GIVE_UP_S = 1800
"""How long a finished instance keeps trying to hand its result to the broker (30 min)."""
DEFAULT_REPORT_BACKOFF_MAX_S = 60
LOG_CHUNK_BYTES = 32768
"""Output bytes per log shipment (`szb logs`): base64 in JSON, it stays under the agent endpoint's
64 KiB body limit. At 256 KiB every shipment was refused (413) and shipping stopped for good."""
REPORT_PATH = "/v1/agent/report"
LOG_TAIL_BYTES = 4096
CONSOLE_TAIL_BYTES = 2048
RESULT_MARK = "SZB-RESULT"
"""Console line: ``SZB-RESULT <attempt id> <base64 of {"exit_code", "log_tail"}>``."""


_TEMPLATE = """\
#!/bin/sh
# Shangzhuang broker bootstrap: job {job_id}, attempt {attempt_id}
set -u
SZB_JOB_ID={job_id_q}
SZB_ATTEMPT_ID={attempt_id_q}
SZB_TOKEN={token_q}
SZB_AGENT_ENDPOINT={endpoint_q}
SZB_AGENT_TOKEN={agent_token_q}
SZB_REPORT_PATH={report_path_q}
SZB_HEARTBEAT_S={heartbeat_s}
SZB_REPORT_GIVE_UP_S={give_up_s}
SZB_REPORT_BACKOFF_MAX_S={backoff_max_s}
SZB_LOG_TAIL_BYTES={tail_bytes}
SZB_CONSOLE_TAIL_BYTES={console_tail_bytes}
SZB_WORKDIR="${{SZB_WORKDIR:-/var/lib/szb/{attempt_safe}}}"
SZB_LOG="$SZB_WORKDIR/job.log"
export SZB_JOB_ID SZB_ATTEMPT_ID SZB_TOKEN SZB_AGENT_ENDPOINT SZB_AGENT_TOKEN SZB_REPORT_PATH
export SZB_HEARTBEAT_S SZB_REPORT_GIVE_UP_S SZB_REPORT_BACKOFF_MAX_S SZB_LOG_TAIL_BYTES
export SZB_CONSOLE_TAIL_BYTES SZB_WORKDIR SZB_LOG
{gang_block}mkdir -p "$SZB_WORKDIR"
SZB_AGENT_CA=""
{ca_block}export SZB_AGENT_CA
SZB_REPORT_PY={report_py_q}

# The job's log tail as the inside of a JSON string, for the curl fallback (no python3 to escape
# it): printable ASCII only, backslashes and quotes escaped, lines joined with \\n.
szb_tail_json() {{
  tail -c "$1" "$SZB_LOG" 2>/dev/null | tr -cd '\\12\\40-\\176' | sed 's/\\\\/\\\\\\\\/g; s/"/\\\\"/g' |
    while IFS= read -r _l || [ -n "$_l" ]; do printf '%s\\\\n' "$_l"; done
}}

# The one transport function: szb_report KIND [EXIT_CODE]. Never fails the script.
# KIND `exit` retries until the broker acknowledges (or the give-up time); `keep` only keeps
# the result (files + the console line) and talks to nobody.
szb_report() {{
  if command -v python3 >/dev/null 2>&1; then
    python3 -c "$SZB_REPORT_PY" "$@" || true
  elif [ "$1" = keep ]; then  # the console line first: a full disk fails only the file
    _tail=$(szb_tail_json $(( SZB_CONSOLE_TAIL_BYTES / 2 )))  # escaped, at most twice as long
    _result=$(printf '{{"exit_code":%s,"log_tail":"%s"}}' "$2" "$_tail" | base64 | tr -d '\\n')
    printf '\\n%s %s %s\\n' {report_mark} "$SZB_ATTEMPT_ID" "$_result"  # a line of its own
    {{ echo "$2" > "$SZB_WORKDIR/exit_code.tmp" &&
      mv "$SZB_WORKDIR/exit_code.tmp" "$SZB_WORKDIR/exit_code"; }} 2>/dev/null
  else
    _tail=""
    [ "$1" = exit ] && _tail=$(szb_tail_json "$SZB_LOG_TAIL_BYTES")
    _line="{{\\"job_id\\":\\"$SZB_JOB_ID\\",\\"attempt_id\\":\\"$SZB_ATTEMPT_ID\\",\\"kind\\":\\"$1\\",\\"rank\\":${{SZB_NODE_RANK:-null}},\\"exit_code\\":${{2:-null}},\\"log_tail\\":\\"$_tail\\"}}"
    printf '%s\\n' "$_line" >> "$SZB_WORKDIR/reports.jsonl" 2>/dev/null  # (echo would unescape)
    if [ -n "$SZB_AGENT_ENDPOINT" ] && command -v curl >/dev/null 2>&1; then
      case "$SZB_AGENT_ENDPOINT" in
        *://*) _ep="$SZB_AGENT_ENDPOINT" ;;
        *) _ep="http${{SZB_AGENT_CA:+s}}://$SZB_AGENT_ENDPOINT" ;;
      esac
      _until=$(( $(date +%s) + SZB_REPORT_GIVE_UP_S )); _wait=1
      until curl -fsS -m 10 ${{SZB_AGENT_CA:+--cacert "$SZB_AGENT_CA"}} -H "content-type: application/json" \\
          -H "authorization: Bearer $SZB_AGENT_TOKEN" -d "$_line" "$_ep$SZB_REPORT_PATH" >/dev/null 2>&1; do
        [ "$1" = exit ] && [ "$(date +%s)" -lt "$_until" ] || break
        sleep "$_wait"
        _wait=$(( _wait * 2 > SZB_REPORT_BACKOFF_MAX_S ? SZB_REPORT_BACKOFF_MAX_S : _wait * 2 ))
      done
    fi
  fi
}}

# The job in a shell of its own: its env (its own PATH, say) must not reach the reports that
# follow it; and in a session of its own, so that a job signalling its process group (`trap
# 'kill 0' EXIT`) does not kill us. (setsid forks only when run as a group leader: never here.)
SZB_JOB_SH={job_sh_q}
szb_run_job() {{
  if command -v setsid >/dev/null 2>&1; then
    setsid sh -c "$SZB_JOB_SH"
  else
    sh -c "$SZB_JOB_SH"
  fi
}}

szb_report started
( while sleep "$SZB_HEARTBEAT_S"; do szb_report heartbeat; done ) &
SZB_HB_PID=$!
szb_run_job > "$SZB_LOG" 2>&1
SZB_RC=$?
szb_report keep "$SZB_RC"
# Heartbeats go on until the broker has the result: a restarting broker finds us alive.
szb_report exit "$SZB_RC"
kill "$SZB_HB_PID" 2>/dev/null
if [ "${{SZB_NO_POWEROFF:-0}}" != 1 ]; then
  shutdown -h now || poweroff
fi
exit "$SZB_RC"
"""


def render_user_data(
    request: LaunchRequest,
    *,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    report_path: str = REPORT_PATH,
    report_give_up_s: int = DEFAULT_REPORT_GIVE_UP_S,
    report_backoff_max_s: int = DEFAULT_REPORT_BACKOFF_MAX_S,
) -> str:
    """The boot script for one attempt; every value from the request is shell-quoted."""
    spec = request.spec
    job_env = {**spec.env, **request.resume_vars()}
    env_lines = "\n".join(f"{k}={shlex.quote(v)}; export {k}" for k, v in sorted(job_env.items()))
    command = " ".join(shlex.quote(arg) for arg in spec.command)
    gang_vars = _GANG_VARS if spec.resources.nodes > 1 else ()
    if spec.image:
        env_flags = "".join(f" -e {k}" for k in sorted({*job_env, *gang_vars}))
        gpus = " --gpus all" if spec.accelerator_count else ""
        name = shlex.quote(f"szb-{_safe(str(request.attempt_id))}")
        run_line = f"docker run --rm --name {name}{gpus}{env_flags} {shlex.quote(spec.image)} {command}"
    else:
        run_line = command
    return _TEMPLATE.format(
        job_id=_safe(str(request.job_id)),
        attempt_id=_safe(str(request.attempt_id)),
        attempt_safe=_safe(str(request.attempt_id)),
        job_id_q=shlex.quote(str(request.job_id)),
        attempt_id_q=shlex.quote(str(request.attempt_id)),
        token_q=shlex.quote(request.token),
        endpoint_q=shlex.quote(request.agent_endpoint),
        agent_token_q=shlex.quote(request.agent_token),
        report_path_q=shlex.quote(report_path),
        heartbeat_s=int(heartbeat_s),
        give_up_s=int(report_give_up_s),
        backoff_max_s=max(1, int(report_backoff_max_s)),
        tail_bytes=LOG_TAIL_BYTES,
        console_tail_bytes=CONSOLE_TAIL_BYTES,
        report_mark=RESULT_MARK,
        report_py_q=shlex.quote(_REPORT_PY),
        ca_block=_ca_block(request.agent_ca_pem),
        job_sh_q=shlex.quote(f"{env_lines}\n{_GANG_ENV if gang_vars else ''}{run_line}\n"),
        gang_block=_gang_block(request),
    )


_GANG_VARS = ("SZB_NODE_RANK", "SZB_NNODES", "SZB_MASTER_ADDR", "NODE_RANK", "RANK", "LOCAL_RANK",
              "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Set after the job's own env: the launcher's variables are the broker's, except a MASTER_PORT
# the job chose.
_GANG_ENV = (
    "NODE_RANK=$SZB_NODE_RANK RANK=$SZB_NODE_RANK LOCAL_RANK=0 WORLD_SIZE=$SZB_NNODES\n"
    "MASTER_ADDR=$SZB_MASTER_ADDR MASTER_PORT=${MASTER_PORT:-" + str(GANG_PORT) + "}\n"
    "export NODE_RANK RANK LOCAL_RANK WORLD_SIZE MASTER_ADDR MASTER_PORT\n"
)


def _gang_block(request: LaunchRequest) -> str:
    """A gang node's rank, size and master address (rank 0 is the master: its own address)."""
    nodes = request.spec.resources.nodes
    if nodes <= 1:
        return ""
    master = shlex.quote(request.master_addr) if request.master_addr else (
        "\"$(hostname -I 2>/dev/null | cut -d' ' -f1)\"\n"
        'SZB_MASTER_ADDR="${SZB_MASTER_ADDR:-$(hostname)}"'
    )
    return (
        f"SZB_NODE_RANK={int(request.node_rank)}\nSZB_NNODES={nodes}\nSZB_MASTER_ADDR={master}\n"
        "export SZB_NODE_RANK SZB_NNODES SZB_MASTER_ADDR\n"
    )


def _ca_block(ca_pem: str) -> str:
    """Write the CA bundle the broker's agent endpoint is verified with (none: system roots)."""
    if not ca_pem.strip():
        return ""
    return (
        'SZB_AGENT_CA="$SZB_WORKDIR/agent-ca.pem"\n'
        f'printf \'%s\\n\' {shlex.quote(ca_pem.strip())} > "$SZB_AGENT_CA"\n'
    )


def _safe(text: str) -> str:
    """Characters safe in a comment, a path and a container name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


class BootstrapOptions(TypedDict):
    """The site config keys that shape the bootstrap (all seconds)."""

    heartbeat_s: int
    report_give_up_s: int
    report_backoff_max_s: int


def bootstrap_options(config: Mapping[str, Any]) -> BootstrapOptions:
    """`render_user_data` options from a cloud site's config (`heartbeat_s`, `report_*`)."""
    return BootstrapOptions(
        heartbeat_s=int(config.get("heartbeat_s", DEFAULT_HEARTBEAT_S)),
        report_give_up_s=int(config.get("report_give_up_s", DEFAULT_REPORT_GIVE_UP_S)),
        report_backoff_max_s=int(config.get("report_backoff_max_s", DEFAULT_REPORT_BACKOFF_MAX_S)),
    )


def result_from_console(console: str, attempt_id: str) -> AttemptStatus | None:
    """The result the bootstrap left on the console for this attempt (the last one), if any."""
    for line in reversed(console.splitlines()):
        # Consoles prefix lines (timestamps, cloud-init[pid]:), and an older bootstrap's line
        # may follow another writer's unfinished one ("...failed:SZB-RESULT"): look anywhere.
        at = line.find(RESULT_MARK)
        words = line[at:].split() if at >= 0 else []
        if len(words) < 3 or words[0] != RESULT_MARK or words[1] != attempt_id:
            continue
        try:
            data = json.loads(base64.b64decode(words[2], validate=True))
            code = int(data["exit_code"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            continue
        return AttemptStatus(
            state=AttemptState.SUCCEEDED if code == 0 else AttemptState.FAILED,
            exit_code=code,
            log_tail=str(data.get("log_tail") or ""),
            message=f"exit code {code}, read from the instance's console output",
        )
    return None
