"""Transport benchmark: what TLS costs on the gRPC port, and what slow agents cost the broker.

    python bench/transport.py --json [--seconds 3] [--half-open 300]

Starts `szb serve` three times (plaintext, TLS, mutual TLS; certificates made at run time)
and measures from this process over loopback: new-connection time (channel + first call),
and ListJobs requests per second and p50/p99 on one warm channel. Then, on the plaintext
broker, opens `--half-open` connections to the agent endpoint that each send half a request
and stop, and reports the broker's thread count before and while they are held, how many
were told 503 at once, and how long until the broker cut the rest. Prints one JSON object.
Only settings every revision of `szb serve` has are used for the plaintext run, so an older
tree can be measured the same way: `--tree DIR --plaintext-only` runs DIR's `szb serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.api import broker_service_pb2 as pb  # noqa: E402
from broker.api import broker_service_pb2_grpc  # noqa: E402

POLICY = """\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - {id: local, adapter: local, country: CN, residency: cn-mainland,
     partitions: [{name: cpu, price_hour: 1.0, cpus_per_node: 8}]}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def start(folder: Path, tls: str, tree: Path) -> tuple[subprocess.Popen[str], int, int]:
    """`szb serve` in `folder` with `tls` appended to broker.yaml; (process, grpc port, agent port)."""
    with socket.socket() as probe:  # a free port named up front: older trees do not log theirs
        probe.bind(("127.0.0.1", 0))
        agent = probe.getsockname()[1]
    (folder / "broker.yaml").write_text(
        textwrap.dedent(f"""\
        data_dir: data
        policy: policy.yaml
        agent_http_listen: 127.0.0.1:{agent}
        """) + tls
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "--config", str(folder / "broker.yaml"),
         "--listen", "127.0.0.1:0"],
        cwd=tree, env={**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONPATH": str(tree)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.search(r"serving on port (\d+)", line):
            return proc, int(m.group(1)), agent
    raise RuntimeError("szb serve did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def channel(port: int, creds: grpc.ChannelCredentials | None) -> grpc.Channel:
    # A fresh subchannel per channel: no connection reuse between the measured connects.
    options = [("grpc.use_local_subchannel_pool", 1)]
    address = f"localhost:{port}"
    return grpc.secure_channel(address, creds, options) if creds else grpc.insecure_channel(address, options)


def grpc_figures(port: int, creds: grpc.ChannelCredentials | None, seconds: float) -> dict[str, float]:
    request = pb.ListJobsRequest(page_size=1)
    connects = []
    for _ in range(20):
        t0 = time.perf_counter()
        with channel(port, creds) as ch:
            broker_service_pb2_grpc.BrokerServiceStub(ch).ListJobs(request, timeout=10)
            connects.append((time.perf_counter() - t0) * 1000)
    latencies = []
    with channel(port, creds) as ch:
        stub = broker_service_pb2_grpc.BrokerServiceStub(ch)
        stub.ListJobs(request, timeout=10)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            stub.ListJobs(request, timeout=10)
            latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    return {
        "connect_ms_p50": round(statistics.median(connects), 2),
        "rps_one_caller": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
    }


def threads(pid: int) -> int:
    m = re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else -1


def half_open(proc: subprocess.Popen[str], port: int, n: int) -> dict[str, float]:
    before = threads(proc.pid)
    held = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(b"POST /v1/agent/report HTTP/1.1\r\ncontent-length: 100\r\nx-slow: ")
        held.append(sock)
    time.sleep(1.0)
    during = threads(proc.pid)
    t0 = time.perf_counter()
    give_up = t0 + 60  # a server without timeouts never closes them: stop looking after a minute
    busy = cut = 0
    for sock in held:
        try:
            sock.settimeout(max(0.01, give_up - time.perf_counter()))
            first = sock.recv(64)
        except (TimeoutError, OSError):
            first = b"?"
        if first.startswith(b"HTTP/1.0 503"):
            busy += 1
        elif first == b"":
            cut += 1
    waited = time.perf_counter() - t0
    for sock in held:
        sock.close()
    return {
        "half_open": n,
        "threads_before": before,
        "threads_while_held": during,
        "answered_503": busy,
        "cut_by_server": cut,
        "still_open_after_60s": n - busy - cut,
        "seconds_until_all_closed": round(waited, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--half-open", type=int, default=300)
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree whose `szb serve` runs")
    parser.add_argument("--plaintext-only", action="store_true", help="skip the TLS runs")
    args = parser.parse_args()
    from broker.tlsgen import write_pki

    folder = Path(tempfile.mkdtemp(prefix="szb-bench-tls-"))
    try:
        for name in ("accelerators.yaml", "regimes.yaml"):
            shutil.copy(ROOT / "configs" / name, folder / name)
        (folder / "policy.yaml").write_text(POLICY)
        pki = write_pki(folder / "pki")
        server_tls = f"tls: {{cert_file: {pki['server_cert']}, key_file: {pki['server_key']}"
        ca = pki["ca"].read_bytes()
        client = (pki["client_key"].read_bytes(), pki["client_cert"].read_bytes())
        runs = {
            "plaintext": ("", None),
            "tls": (server_tls + "}\n", grpc.ssl_channel_credentials(ca)),
            "mutual_tls": (
                server_tls + f", client_ca_file: {pki['ca']}, require_client_cert: true}}\n",
                grpc.ssl_channel_credentials(ca, *client),
            ),
        }
        result: dict[str, object] = {"seconds": args.seconds, "cpus": os.cpu_count()}
        for name, (tls, creds) in runs.items():
            if args.plaintext_only and name != "plaintext":
                continue
            proc, port, agent = start(folder, tls, args.tree.resolve())
            try:
                result[name] = grpc_figures(port, creds, args.seconds)
                if name == "plaintext" and args.half_open:
                    result["agent_endpoint"] = half_open(proc, agent, args.half_open)
            finally:
                stop(proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
