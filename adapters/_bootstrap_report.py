"""The python3 snippet a cloud bootstrap runs for each report (`adapters.bootstrap`).

``python3 -c "$SZB_REPORT_PY" KIND [EXIT_CODE]``: ``keep`` writes the result to files and the
console; ``started``/``heartbeat`` report (a heartbeat ships new output first); ``exit`` ships the
output the broker has not acknowledged, then reports until acknowledged or given up.
"""

READABLE = r"""
import base64, json, os, random, ssl, sys, time, urllib.error, urllib.request
kind = sys.argv[1]
rc = sys.argv[2] if len(sys.argv) > 2 else ""
env = os.environ
work = env["SZB_WORKDIR"]
SHIP_HOLD_S = 120  # how long output the broker answers it cannot take holds the exit report back
tail = ""
if kind in ("exit", "keep"):
    try:
        with open(env["SZB_LOG"], "rb") as f:
            tail = f.read()[-int(env["SZB_LOG_TAIL_BYTES"]):].decode("utf-8", "replace")
    except OSError:
        pass
if kind == "keep":  # the result, kept before anyone is told: the console, then files
    # Others write to the console too (the heartbeat, the kernel), maybe half a line at a time:
    # the result goes out in one write that starts its own line and that a pipe keeps whole
    # (PIPE_BUF, 4096 bytes on Linux), so the broker can always read it back. It goes first: a
    # job that filled the disk makes the files below fail (ENOSPC), never the console line.
    short = tail[-int(env["SZB_CONSOLE_TAIL_BYTES"]):]
    while True:
        data = base64.b64encode(json.dumps({"exit_code": int(rc), "log_tail": short}).encode())
        line = b"\nSZB-RESULT " + env["SZB_ATTEMPT_ID"].encode() + b" " + data + b"\n"
        if len(line) <= 4096 or not short:
            break
        short = short[max(1, (len(line) - 4096) // 8):]  # an escaped character: 8 bytes of it
    os.write(1, line)
    result = json.dumps({"exit_code": int(rc), "log_tail": tail})
    for name, text in (("exit_code", rc), ("result.json", result)):
        try:
            with open(os.path.join(work, name + ".tmp"), "w") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(os.path.join(work, name + ".tmp"), os.path.join(work, name))
        except OSError as exc:
            print("szb: result file not written:", exc, file=sys.stderr)
    sys.exit(0)
body = json.dumps({"job_id": env["SZB_JOB_ID"], "attempt_id": env["SZB_ATTEMPT_ID"],
                   "token": env["SZB_TOKEN"], "kind": kind,
                   "rank": int(env["SZB_NODE_RANK"]) if env.get("SZB_NODE_RANK") else None,
                   "exit_code": int(rc) if rc else None, "log_tail": tail, "time": time.time()})
try:  # a record for whoever looks at the instance; a full disk must not stop the report
    with open(os.path.join(work, "reports.jsonl"), "a") as f:
        f.write(body + "\n")
except OSError:
    pass
ep = env.get("SZB_AGENT_ENDPOINT", "")
if not ep:
    sys.exit(0)
ca = env.get("SZB_AGENT_CA") or None
if "://" not in ep:
    ep = ("https://" if ca else "http://") + ep


def final(exc):
    # A 4xx is the broker's word (bad secret, gone attempt) only when its agent endpoint marked the
    # answer: a proxy's or ingress's 404 or 403 in front of it (restarting, say) is retried.
    return exc.code < 500 and exc.code not in (408, 429) and exc.headers.get("x-szb-agent") == "1"


def send():
    req = urllib.request.Request(ep.rstrip("/") + env["SZB_REPORT_PATH"], data=body.encode(),
        headers={"content-type": "application/json",
                 "authorization": "Bearer " + env.get("SZB_AGENT_TOKEN", "")})
    try:
        # The broker's certificate is verified (against SZB_AGENT_CA when the broker sent one).
        urllib.request.urlopen(req, timeout=10, context=ssl.create_default_context(cafile=ca)).read()
        return "acked"
    except urllib.error.HTTPError as exc:  # only the broker's own refusal is final
        print("szb: report refused:", exc, file=sys.stderr)
        return "refused" if final(exc) else "retry"
    except Exception as exc:  # down, restarting, unreachable: try again
        print("szb: report failed:", exc, file=sys.stderr)
        return "retry"




acked = [0]  # the offset acknowledged last, in memory too: on a full disk log.offset is not written


def ship_log():
    # `szb logs`: output written since the last offset the broker acknowledged. Says "sent",
    # "empty" (all acknowledged), "down" (no answer: the broker is away), "failed" (its trouble,
    # for now) or "refused" (for good).
    mark = os.path.join(work, "log.offset")
    try:
        with open(mark) as f:
            off = int(f.read() or 0)
    except (OSError, ValueError):
        off = 0
    off = max(off, acked[0])
    try:
        with open(env["SZB_LOG"], "rb") as f:
            f.seek(off)
            chunk = f.read(32768)  # LOG_CHUNK_BYTES: its JSON stays under the endpoint's 64 KiB
    except OSError:
        chunk = b""
    if not chunk:
        return "empty"
    data = json.dumps({"attempt_id": env["SZB_ATTEMPT_ID"], "offset": off,
                       "data": base64.b64encode(chunk).decode()}).encode()
    req = urllib.request.Request(ep.rstrip("/") + "/v1/agent/log", data=data,
        headers={"content-type": "application/json",
                 "authorization": "Bearer " + env.get("SZB_AGENT_TOKEN", "")})
    try:
        reply = urllib.request.urlopen(req, timeout=10, context=ssl.create_default_context(cafile=ca))
        nxt = int(json.loads(reply.read())["next_offset"])
    except urllib.error.HTTPError as exc:
        print("szb: log chunk not sent:", exc, file=sys.stderr)
        return "refused" if final(exc) else "failed"
    except urllib.error.URLError as exc:
        print("szb: log chunk not sent:", exc, file=sys.stderr)
        return "down" if isinstance(exc.reason, ConnectionError) else "failed"
    except Exception as exc:
        print("szb: log chunk not sent:", exc, file=sys.stderr)
        return "failed"
    acked[0] = nxt
    tmp = mark + "." + str(os.getpid()) + ".tmp"  # the heartbeat's and the exit's shipping may overlap
    try:
        with open(tmp, "w") as f:
            f.write(str(nxt))
        os.replace(tmp, mark)
    except OSError:  # a full disk: a later snippet resends from an older offset (chunks are idempotent)
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return "sent" if nxt > off else "refused"


def ship_all(chunks):
    for _ in range(chunks):
        state = ship_log()
        if state != "sent":
            return state
    return "more"


if kind == "heartbeat":
    ship_all(8)
if kind != "exit":
    send()
    sys.exit(0)
deadline = time.time() + float(env["SZB_REPORT_GIVE_UP_S"])
delay = min(1.0, float(env["SZB_REPORT_BACKOFF_MAX_S"]))
sick_since = None
while True:
    # The output first: the broker's ack ends the instance, and what it still holds with it. A
    # broker that came back between a failed shipment and the report lost the rest. Output the
    # broker answers it cannot take now holds the report back SHIP_HOLD_S at most; a backlog past
    # 128 chunks (4 MiB) does not: a GPU billed for minutes of 32 KiB posts the broker may not keep.
    state = ship_all(128)
    now = time.time()
    if state == "failed" and sick_since is None:
        sick_since = now
    holding = state == "down" or (state == "failed" and now - sick_since < SHIP_HOLD_S)
    if holding and now + delay <= deadline:
        outcome = "retry"
    else:
        outcome = send()
    if outcome == "acked":
        try:
            open(os.path.join(work, "acked"), "w").close()
        except OSError:
            pass
        sys.exit(0)
    if outcome == "refused" or time.time() + delay > deadline:
        print("szb: result not delivered (" + outcome + "); it stays in", work, "and on the console",
              file=sys.stderr)
        sys.exit(3)
    time.sleep(random.uniform(delay / 2, delay))
    delay = min(delay * 2, float(env["SZB_REPORT_BACKOFF_MAX_S"]))
"""


def _shipped(source: str) -> str:
    """The snippet as the UserData carries it: without its comment lines (EC2 takes 16 KB of
    UserData, the job's env included; the comments are for whoever reads this file)."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#")) + "\n"


REPORT_PY = _shipped(READABLE)
