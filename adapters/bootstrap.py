"""UserData: the POSIX sh script a cloud instance runs at boot to do one attempt.

The script runs the job (``docker run`` when the spec names an image, else the command
itself) with the job's env, reports ``started``, a ``heartbeat`` every N seconds and the
final ``exit`` (code + log tail) to the broker's AgentService, writes the exit code to
``$SZB_WORKDIR/exit_code`` and powers the machine off (unless ``SZB_NO_POWEROFF=1``).

The transport lives in one shell function, ``szb_report``; it runs a python3 snippet that
POSTs JSON (`REPORT_PATH` on the agent endpoint, bearer token) and falls back to curl. Both
verify the broker's TLS certificate: against the CA bundle the broker put in the UserData
(``agent_ca_pem``), else against the instance's system roots.
Every report is also appended to ``$SZB_WORKDIR/reports.jsonl``.
"""

from __future__ import annotations

import shlex

from broker.model import LaunchRequest

__all__ = ["DEFAULT_HEARTBEAT_S", "REPORT_PATH", "render_user_data"]

DEFAULT_HEARTBEAT_S = 30
REPORT_PATH = "/v1/agent/report"
LOG_TAIL_BYTES = 4096

_REPORT_PY = r"""
import json, os, ssl, sys, time, urllib.request
kind = sys.argv[1]
rc = sys.argv[2] if len(sys.argv) > 2 else ""
tail = ""
if kind == "exit":
    try:
        with open(os.environ["SZB_LOG"], "rb") as f:
            tail = f.read()[-int(os.environ["SZB_LOG_TAIL_BYTES"]):].decode("utf-8", "replace")
    except OSError:
        pass
body = json.dumps({"job_id": os.environ["SZB_JOB_ID"], "attempt_id": os.environ["SZB_ATTEMPT_ID"],
                   "token": os.environ["SZB_TOKEN"], "kind": kind,
                   "exit_code": int(rc) if rc else None, "log_tail": tail, "time": time.time()})
with open(os.path.join(os.environ["SZB_WORKDIR"], "reports.jsonl"), "a") as f:
    f.write(body + "\n")
ep = os.environ.get("SZB_AGENT_ENDPOINT", "")
if ep:
    ca = os.environ.get("SZB_AGENT_CA") or None
    if "://" not in ep:
        ep = ("https://" if ca else "http://") + ep
    req = urllib.request.Request(ep.rstrip("/") + os.environ["SZB_REPORT_PATH"], data=body.encode(),
        headers={"content-type": "application/json",
                 "authorization": "Bearer " + os.environ.get("SZB_AGENT_TOKEN", "")})
    try:
        # The broker's certificate is verified (against SZB_AGENT_CA when the broker sent one).
        urllib.request.urlopen(req, timeout=10, context=ssl.create_default_context(cafile=ca)).read()
    except Exception as exc:
        print("szb: report failed:", exc, file=sys.stderr)
"""

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
SZB_LOG_TAIL_BYTES={tail_bytes}
SZB_WORKDIR="${{SZB_WORKDIR:-/var/lib/szb/{attempt_safe}}}"
SZB_LOG="$SZB_WORKDIR/job.log"
export SZB_JOB_ID SZB_ATTEMPT_ID SZB_TOKEN SZB_AGENT_ENDPOINT SZB_AGENT_TOKEN SZB_REPORT_PATH
export SZB_HEARTBEAT_S SZB_LOG_TAIL_BYTES SZB_WORKDIR SZB_LOG
mkdir -p "$SZB_WORKDIR"
SZB_AGENT_CA=""
{ca_block}export SZB_AGENT_CA
SZB_REPORT_PY={report_py_q}

# The one transport function: szb_report KIND [EXIT_CODE]. Never fails the script.
szb_report() {{
  if command -v python3 >/dev/null 2>&1; then
    python3 -c "$SZB_REPORT_PY" "$@" || true
  else
    _line="{{\\"job_id\\":\\"$SZB_JOB_ID\\",\\"attempt_id\\":\\"$SZB_ATTEMPT_ID\\",\\"kind\\":\\"$1\\",\\"exit_code\\":${{2:-null}}}}"
    echo "$_line" >> "$SZB_WORKDIR/reports.jsonl"
    if [ -n "$SZB_AGENT_ENDPOINT" ] && command -v curl >/dev/null 2>&1; then
      case "$SZB_AGENT_ENDPOINT" in
        *://*) _ep="$SZB_AGENT_ENDPOINT" ;;
        *) _ep="http${{SZB_AGENT_CA:+s}}://$SZB_AGENT_ENDPOINT" ;;
      esac
      curl -fsS -m 10 ${{SZB_AGENT_CA:+--cacert "$SZB_AGENT_CA"}} -H "content-type: application/json" \\
        -H "authorization: Bearer $SZB_AGENT_TOKEN" -d "$_line" "$_ep$SZB_REPORT_PATH" >/dev/null 2>&1 || true
    fi
  fi
}}

szb_run_job() {{
{env_lines}
{run_line}
}}

szb_report started
( while sleep "$SZB_HEARTBEAT_S"; do szb_report heartbeat; done ) &
SZB_HB_PID=$!
szb_run_job > "$SZB_LOG" 2>&1
SZB_RC=$?
kill "$SZB_HB_PID" 2>/dev/null
echo "$SZB_RC" > "$SZB_WORKDIR/exit_code"
szb_report exit "$SZB_RC"
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
) -> str:
    """The boot script for one attempt; every value from the request is shell-quoted."""
    spec = request.spec
    env_lines = "\n".join(f"  {k}={shlex.quote(v)}; export {k}" for k, v in sorted(spec.env.items()))
    command = " ".join(shlex.quote(arg) for arg in spec.command)
    if spec.image:
        env_flags = "".join(f" -e {k}" for k in sorted(spec.env))
        gpus = " --gpus all" if spec.accelerator_count else ""
        name = shlex.quote(f"szb-{_safe(str(request.attempt_id))}")
        run_line = f"  docker run --rm --name {name}{gpus}{env_flags} {shlex.quote(spec.image)} {command}"
    else:
        run_line = f"  {command}"
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
        tail_bytes=LOG_TAIL_BYTES,
        report_py_q=shlex.quote(_REPORT_PY),
        ca_block=_ca_block(request.agent_ca_pem),
        env_lines=env_lines or "  :",
        run_line=run_line,
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
